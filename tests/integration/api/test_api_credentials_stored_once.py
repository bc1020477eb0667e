"""A tenant's Google credential is stored once (issue 24 item 2): one sealed row per tenant and
key that mailboxes and the tenant's settings refer to, each mailbox keeping only its own part;
rotation re-encrypts that one row; the row goes with its last user. Against the simulator,
the Pub/Sub emulator and real Postgres."""

from __future__ import annotations

import asyncio
import json

import grpc
import psycopg
import pytest

from mailwatch.cli import main as cli_main
from mailwatch.secrets import generate_key
from mailwatch.store import registrations as registrations_store
from mailwatch.v1 import admin_service_pb2, mailbox_service_pb2
from tests.fixtures.factory import service_account_request
from tests.fixtures.names import TEST_PROJECT
from tests.fixtures.pipeline import collect, message_events
from tests.fixtures.rpc import ACTIVE, error_details, tenant_topic
from tests.fixtures.service import OPERATOR_TOKEN

pytestmark = pytest.mark.integration

OPERATOR = [("authorization", f"Bearer {OPERATOR_TOKEN}")]


def _query(database_url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        return conn.execute(sql, params).fetchall()


def _sealed_rows(database_url: str, tenant_id: str) -> list[tuple]:
    """(id, digest, ciphertext) of the tenant's sealed credentials."""
    return _query(database_url, "SELECT id, digest, ciphertext FROM sealed_credentials WHERE tenant_id = %s "
                                "ORDER BY created, id", tenant_id)


def _mailbox_credentials(database_url: str, tenant_id: str) -> dict[str, tuple]:
    """address -> (sealed_credential_id, refresh_token_ciphertext, subject) of the tenant's mailboxes."""
    rows = _query(database_url, "SELECT email_address, sealed_credential_id, refresh_token_ciphertext, subject "
                                "FROM mailboxes WHERE tenant_id = %s", tenant_id)
    return {row[0]: tuple(row[1:]) for row in rows}


def _added(events) -> set[str]:
    return {message_id for kind, message_id, _ in message_events(events) if kind == "EVENT_TYPE_MESSAGE_ADDED"}


async def _batch(service, auth, key: dict, emails: list[str]) -> None:
    for email in emails:
        service.sim.create_mailbox(email)
    response = await service.mailboxes.BatchRegisterMailboxes(mailbox_service_pb2.BatchRegisterMailboxesRequest(
        email_addresses=emails,
        service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(key))), metadata=auth)
    assert [result.status.code for result in response.results] == [0] * len(emails)


async def test_one_key_is_one_row_per_tenant_whatever_the_number_of_mailboxes(service, database_url):
    key = service.sim.create_service_account_key(project_id=TEST_PROJECT)
    tenant_a, auth_a = await service.new_tenant()
    tenant_b, auth_b = await service.new_tenant()
    emails = [f"user{n:02d}@example.com" for n in range(20)]
    await _batch(service, auth_a, key, emails[:12])
    [first] = _sealed_rows(database_url, tenant_a)
    await _batch(service, auth_a, key, emails[12:])  # a second batch finds the row and leaves it as it is
    await service.mailboxes.RegisterMailbox(service_account_request(emails[0], key), metadata=auth_b)

    [(row_a, digest_a, sealed_a)] = _sealed_rows(database_url, tenant_a)
    assert (row_a, digest_a, bytes(sealed_a)) == (first[0], first[1], bytes(first[2]))
    [(row_b, digest_b, _)] = _sealed_rows(database_url, tenant_b)
    assert row_a != row_b and digest_a == digest_b  # the same key, but never a row shared across tenants
    mailboxes_a = _mailbox_credentials(database_url, tenant_a)
    assert set(mailboxes_a) == set(emails)
    assert set(mailboxes_a.values()) == {(row_a, None, None)}  # nothing secret of their own; subject = address
    assert set(_mailbox_credentials(database_url, tenant_b).values()) == {(row_b, None, None)}
    # The row of a service-account mailbox now fits in well under a kilobyte.
    [(largest,)] = _query(database_url, "SELECT max(pg_column_size(m.*)) FROM mailboxes m WHERE tenant_id = %s",
                          tenant_a)
    assert largest < 1024, largest

    # Each mailbox of the shared row syncs as its own user.
    for email in emails[:3]:
        service.sim.insert_message(email, label_ids=["INBOX"])
    events = await collect(service, auth_a, lambda ev: len(_added(ev)) >= 3)
    assert {e.email_address for e in events if e.message_id} == set(emails[:3])


async def test_oauth_mailboxes_share_the_client_and_keep_their_own_refresh_tokens(service, database_url):
    tenant_id, auth = await service.new_tenant()
    client = service.sim.create_oauth_client(project_id=TEST_PROJECT)
    users = ["olive@example.com", "oscar@example.com"]
    for email in users:
        service.sim.create_mailbox(email)
        token = service.sim.issue_refresh_token(client["clientId"], email)
        mailbox = await service.mailboxes.RegisterMailbox(mailbox_service_pb2.RegisterMailboxRequest(
            email_address=email, oauth=mailbox_service_pb2.OAuthCredentials(
                client_id=client["clientId"], client_secret=client["clientSecret"], refresh_token=token)),
            metadata=auth)
        assert mailbox.state == ACTIVE

    [(row, _, _)] = _sealed_rows(database_url, tenant_id)
    stored = _mailbox_credentials(database_url, tenant_id)
    assert {stored[email][0] for email in users} == {row}
    tokens = [bytes(stored[email][1]) for email in users]
    assert all(tokens) and tokens[0] != tokens[1]

    # Each syncs with its own token: one user's messages come with that user's grant only.
    sent = {email: service.sim.insert_message(email, label_ids=["INBOX"])["id"] for email in users}
    events = await collect(service, auth, lambda ev: set(sent.values()) <= _added(ev))
    assert {(e.email_address, e.message_id) for e in events if e.message_id in sent.values()} == {
        (email, message_id) for email, message_id in sent.items()}


async def test_rotation_re_encrypts_one_row_and_every_mailbox_syncs_under_the_new_key_alone(
        make_service, database_url, monkeypatch, capsys):
    old, new = generate_key(), generate_key()
    emails = [f"rot{n}@example.com" for n in range(5)]
    async with make_service(secret_keys=(old,)) as service:
        tenant_id, auth = await service.new_tenant()
        key = service.sim.create_service_account_key(project_id=TEST_PROJECT)
        await _batch(service, auth, key, emails)
        [(row, digest, before)] = _sealed_rows(database_url, tenant_id)
        client = service.sim.create_oauth_client(project_id=TEST_PROJECT)
        service.sim.create_mailbox("orla@example.com")
        await service.mailboxes.RegisterMailbox(mailbox_service_pb2.RegisterMailboxRequest(
            email_address="orla@example.com", oauth=mailbox_service_pb2.OAuthCredentials(
                client_id=client["clientId"], client_secret=client["clientSecret"],
                refresh_token=service.sim.issue_refresh_token(client["clientId"], "orla@example.com"))),
            metadata=auth)
    token_before = _mailbox_credentials(database_url, tenant_id)["orla@example.com"][1]

    monkeypatch.setenv("MAILWATCH_SECRET_KEYS", f"{new},{old}")
    assert await asyncio.to_thread(cli_main, ["rotate-secrets", "--database-url", database_url]) == 0
    # One row for the five service-account mailboxes, one for the OAuth client, and its one refresh token.
    assert "re-encrypted 2 credential row(s) and 1 refresh token(s) under the first key\n" == capsys.readouterr().out
    rows_after = {r[0]: r for r in _sealed_rows(database_url, tenant_id)}
    assert rows_after[row][1] == digest and bytes(rows_after[row][2]) != bytes(before)
    stored = _mailbox_credentials(database_url, tenant_id)
    assert {stored[email] for email in emails} == {(row, None, None)}  # the mailbox rows untouched
    assert bytes(stored["orla@example.com"][1]) != bytes(token_before)

    async with make_service(secret_keys=(new,)) as service:  # the old key is gone
        sent = [service.sim.insert_message(email, label_ids=["INBOX"])["id"] for email in [*emails, "orla@example.com"]]
        events = await collect(service, auth, lambda ev: set(sent) <= _added(ev))
        assert set(sent) <= _added(events)
        listed = await service.mailboxes.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=auth)
        assert {m.state for m in listed.mailboxes} == {ACTIVE} and not any(m.HasField("last_error") for m in listed.mailboxes)


async def test_the_row_goes_with_its_last_mailbox_and_settings(service, database_url):
    tenant_id, auth = await service.new_tenant()
    key = service.sim.create_service_account_key(project_id=TEST_PROJECT)
    client = service.sim.create_oauth_client(project_id=TEST_PROJECT)
    service.sim.create_mailbox("ozzy@example.com")
    oauth = await service.mailboxes.RegisterMailbox(mailbox_service_pb2.RegisterMailboxRequest(
        email_address="ozzy@example.com", oauth=mailbox_service_pb2.OAuthCredentials(
            client_id=client["clientId"], client_secret=client["clientSecret"],
            refresh_token=service.sim.issue_refresh_token(client["clientId"], "ozzy@example.com"))), metadata=auth)
    await _batch(service, auth, key, ["sam@example.com", "sue@example.com"])
    listed = await service.mailboxes.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=auth)
    ids = {m.email_address: m.id for m in listed.mailboxes}
    assert len(_sealed_rows(database_url, tenant_id)) == 2

    async def stop(email):
        await service.mailboxes.StopMailbox(mailbox_service_pb2.StopMailboxRequest(mailbox_id=ids[email]),
                                            metadata=auth)

    await stop("ozzy@example.com")
    assert len(_sealed_rows(database_url, tenant_id)) == 1  # the OAuth client had one user
    assert _mailbox_credentials(database_url, tenant_id)["ozzy@example.com"] == (None, None, None)
    refused = await _failure(service.mailboxes.ListMessages(
        mailbox_service_pb2.ListMessagesRequest(mailbox_id=oauth.id), metadata=auth))
    assert refused.code().name == "FAILED_PRECONDITION" and error_details(refused)[0].reason == "MAILBOX_STOPPED"
    await stop("sam@example.com")
    [(row, _, _)] = _sealed_rows(database_url, tenant_id)  # sue still uses the key
    await stop("sue@example.com")
    assert _sealed_rows(database_url, tenant_id) == []  # no secret left behind
    assert _query(database_url, "SELECT count(*) FROM mailboxes WHERE tenant_id = %s "
                                "AND (sealed_credential_id IS NOT NULL OR refresh_token_ciphertext IS NOT NULL)",
                  tenant_id) == [(0,)]

    # The tenant's settings hold their row as a mailbox does.
    names = tenant_topic(TEST_PROJECT)
    await _set_settings(service, tenant_id, key, names)
    service.sim.create_mailbox("dee@example.com")
    dee = await service.mailboxes.RegisterMailbox(
        mailbox_service_pb2.RegisterMailboxRequest(email_address="dee@example.com"), metadata=auth)
    [(row, _, _)] = _sealed_rows(database_url, tenant_id)
    assert _mailbox_credentials(database_url, tenant_id)["dee@example.com"] == (row, None, None)
    await service.mailboxes.StopMailbox(mailbox_service_pb2.StopMailboxRequest(mailbox_id=dee.id), metadata=auth)
    assert [r[0] for r in _sealed_rows(database_url, tenant_id)] == [row]
    await service.admin.ClearTenantGoogleSettings(
        admin_service_pb2.ClearTenantGoogleSettingsRequest(tenant_id=tenant_id), metadata=OPERATOR)
    assert _sealed_rows(database_url, tenant_id) == []


async def test_a_new_key_of_the_tenants_service_account_rewrites_one_row_and_its_mailboxes_follow(
        service, database_url):
    tenant_id, auth = await service.new_tenant()
    names = tenant_topic(TEST_PROJECT)
    first = service.sim.create_service_account_key(project_id=TEST_PROJECT, name="tenant-sync")
    await _set_settings(service, tenant_id, first, names)
    emails = ["kim@example.com", "kai@example.com", "kat@example.com"]
    for email in emails:
        service.sim.create_mailbox(email)
        await service.mailboxes.RegisterMailbox(mailbox_service_pb2.RegisterMailboxRequest(email_address=email),
                                                metadata=auth)
    [(row, digest, _)] = _sealed_rows(database_url, tenant_id)
    assert set(_mailbox_credentials(database_url, tenant_id).values()) == {(row, None, None)}

    # The service account gets a new key; the simulator forgets the old one (as deleting it in Google does).
    second = service.sim.create_service_account_key(project_id=TEST_PROJECT, name="tenant-sync")
    assert second["client_email"] == first["client_email"] and second["private_key"] != first["private_key"]
    await _set_settings(service, tenant_id, second, names)
    [(row_after, digest_after, _)] = _sealed_rows(database_url, tenant_id)
    assert row_after == row and digest_after != digest
    assert set(_mailbox_credentials(database_url, tenant_id).values()) == {(row, None, None)}

    sent = [service.sim.insert_message(email, label_ids=["INBOX"])["id"] for email in emails]
    events = await collect(service, auth, lambda ev: set(sent) <= _added(ev))
    assert set(sent) <= _added(events)

    # Another service account is another row; the old one goes once nothing uses it.
    other = service.sim.create_service_account_key(project_id=TEST_PROJECT)
    await _set_settings(service, tenant_id, other, names)
    assert len(_sealed_rows(database_url, tenant_id)) == 2  # the mailboxes still use theirs


async def test_a_new_key_set_while_many_mailboxes_register_with_it_is_one_row(service, database_url):
    """SetTenantGoogleSettings with the service account's new key while the tenant registers
    many mailboxes with that key, all at once: every call succeeds (no INTERNAL from two
    transactions sealing the same key) and the tenant ends with one row that all use. The
    orders the calls can interleave in are pinned one by one in
    tests/integration/store/test_store_sealed_credentials.py."""
    tenant_id, auth = await service.new_tenant()
    names = tenant_topic(TEST_PROJECT)
    first = service.sim.create_service_account_key(project_id=TEST_PROJECT, name="tenant-busy")
    await _set_settings(service, tenant_id, first, names)
    service.sim.create_mailbox("before@example.com")
    await service.mailboxes.RegisterMailbox(mailbox_service_pb2.RegisterMailboxRequest(
        email_address="before@example.com"), metadata=auth)

    second = service.sim.create_service_account_key(project_id=TEST_PROJECT, name="tenant-busy")
    emails = [f"busy{n:02d}@example.com" for n in range(16)]
    for email in emails:
        service.sim.create_mailbox(email)
    registrations = [service.mailboxes.RegisterMailbox(service_account_request(email, second), metadata=auth)
                     for email in emails]
    results = await asyncio.gather(*registrations[:8], _set_settings(service, tenant_id, second, names),
                                   *registrations[8:], return_exceptions=True)
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert {m.state for m in results if m is not None} == {ACTIVE}

    [(row, _, _)] = _sealed_rows(database_url, tenant_id)
    assert set(_mailbox_credentials(database_url, tenant_id).values()) == {(row, None, None)}
    sent = [service.sim.insert_message(email, label_ids=["INBOX"])["id"] for email in ["before@example.com", *emails]]
    events = await collect(service, auth, lambda ev: set(sent) <= _added(ev))
    assert set(sent) <= _added(events)


async def test_a_tenant_default_registration_in_flight_while_the_tenant_key_is_replaced(
        service, database_url, monkeypatch):
    """RegisterMailbox with the tenant's defaults reads the settings (first key) and calls Gmail
    with it; the operator sets the service account's second key (and deletes the first in
    Google) before the registration writes. The mailbox refers to the settings' one row, now
    the second key, and syncs; it is not left on a row of its own holding the deleted key."""
    tenant_id, auth = await service.new_tenant()
    names = tenant_topic(TEST_PROJECT)
    first = service.sim.create_service_account_key(project_id=TEST_PROJECT, name="tenant-rot")
    await _set_settings(service, tenant_id, first, names)
    service.sim.create_mailbox("rot@example.com")
    write = registrations_store.save_registrations
    replaced = []

    async def key_replaced_first(*args, **kwargs):
        if not replaced:  # between the Gmail calls (first key) and the registration's write
            second = service.sim.create_service_account_key(project_id=TEST_PROJECT, name="tenant-rot")
            await _set_settings(service, tenant_id, second, names)
            replaced.append(second)
        return await write(*args, **kwargs)

    monkeypatch.setattr(registrations_store, "save_registrations", key_replaced_first)
    await service.mailboxes.RegisterMailbox(
        mailbox_service_pb2.RegisterMailboxRequest(email_address="rot@example.com"), metadata=auth)
    assert replaced

    [(settings_row,)] = _query(database_url, "SELECT sealed_credential_id FROM tenant_google_settings "
                                             "WHERE tenant_id = %s", tenant_id)
    assert [row for row, _, _ in _sealed_rows(database_url, tenant_id)] == [settings_row]
    assert _mailbox_credentials(database_url, tenant_id)["rot@example.com"] == (settings_row, None, None)
    sent = service.sim.insert_message("rot@example.com", label_ids=["INBOX"])["id"]
    events = await collect(service, auth, lambda ev: sent in _added(ev))
    assert sent in _added(events)


async def _set_settings(service, tenant_id: str, key: dict, names: dict) -> None:
    await service.admin.SetTenantGoogleSettings(admin_service_pb2.SetTenantGoogleSettingsRequest(
        tenant_id=tenant_id, service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(key)),
        pubsub_topic=names["topic"], pubsub_subscription=names["subscription"]), metadata=OPERATOR)


async def _failure(call):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value
