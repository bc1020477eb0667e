"""Credentials are encrypted at rest, never returned, never logged."""

from __future__ import annotations

import json
import logging

import psycopg
import pytest

from mailwatch.v1 import mailbox_service_pb2
from tests.fixtures.names import TEST_PROJECT
from tests.fixtures.rpc import oauth_request

pytestmark = pytest.mark.integration


async def test_credentials_never_leave_in_clear(service, database_url, caplog):
    caplog.set_level(logging.DEBUG)
    _, auth = await service.new_tenant()
    oauth, client, refresh_token = oauth_request(service.sim, "secret-keeper@example.com")
    key = service.sim.create_service_account_key(project_id=TEST_PROJECT)
    service.sim.create_mailbox("sa-user@example.com")
    sa = mailbox_service_pb2.RegisterMailboxRequest(
        email_address="sa-user@example.com",
        service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(key)),
    )
    responses = [
        await service.mailboxes.RegisterMailbox(oauth, metadata=auth),
        await service.mailboxes.RegisterMailbox(sa, metadata=auth),
    ]
    responses.append(await service.mailboxes.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=auth))
    for mailbox in responses[:2]:
        responses.append(
            await service.mailboxes.GetMailbox(mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox.id), metadata=auth)
        )
    # A failing call logs too: make sure its log lines carry no secret either.
    service.sim.revoke_user("secret-keeper@example.com")
    try:
        await service.mailboxes.RegisterMailbox(oauth, metadata=auth)
    except Exception:  # noqa: BLE001 - the failure itself is tested elsewhere
        pass

    private_key_body = key["private_key"].split("-----")[2].strip().splitlines()[3]
    secrets = [refresh_token, client["clientSecret"], private_key_body]

    wire = b"".join(response.SerializeToString() for response in responses)
    logs = "\n".join(record.getMessage() + repr(record.__dict__) for record in caplog.records)
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        rows = conn.execute("SELECT row_to_json(m)::text FROM mailboxes m").fetchall()
        events = conn.execute("SELECT row_to_json(e)::text FROM change_events e").fetchall()
        sealed = conn.execute("SELECT row_to_json(s)::text FROM sealed_credentials s").fetchall()
        ciphertexts = [bytes(r[0]) for r in conn.execute(
            "SELECT ciphertext FROM sealed_credentials UNION ALL "
            "SELECT refresh_token_ciphertext FROM mailboxes WHERE refresh_token_ciphertext IS NOT NULL")]
    stored = "\n".join(r[0] for r in rows + events + sealed)
    assert len(rows) == 2 and len(ciphertexts) == 3 and all(ciphertexts)  # key, OAuth client, refresh token
    for secret in secrets:
        assert secret not in stored, "credential stored in plain text"
        assert all(secret.encode() not in c for c in ciphertexts)
        assert secret.encode() not in wire, "credential returned by an RPC"
        assert secret not in logs, "credential logged"
