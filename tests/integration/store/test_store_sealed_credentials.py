"""`sealed_credentials` under concurrency, in real Postgres: a tenant's new key sealed by a
registration while the settings path rewrites the old key's row, and a delete of unused rows
while a registration is about to refer to them; a tenant-default registration writing after
the tenant's key was replaced. Each test drives the store functions in two
transactions in a chosen order (a transaction waits for the other's lock before it goes on)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select

from mailwatch.domain.models import (
    CredentialKind, GoogleSettings, LabelFilter, SealedCredential, ServiceAccountCredential,
)
from mailwatch.secrets import SealedSecret, SecretBox, generate_key
from mailwatch.store import google_settings, registrations, sealed_credentials
from mailwatch.store import mailboxes as mailboxes_store
from mailwatch.store.db import reading, transaction
from mailwatch.store.models import mailboxes, sealed_credentials as sealed_table
from tests.fixtures.factory import Rows, add_mailbox

from .conftest import blocked_on_a_lock

pytestmark = pytest.mark.integration


def _secret(digest: bytes) -> SealedSecret:
    return SealedSecret(kind=CredentialKind.SERVICE_ACCOUNT, digest=digest, ciphertext=b"sealed-" + digest)


async def _rows(sessions, tenant_id) -> dict[bytes, uuid.UUID]:
    async with sessions() as session:
        result = await session.execute(select(sealed_table.c.digest, sealed_table.c.id)
                                       .where(sealed_table.c.tenant_id == tenant_id))
        return {bytes(row.digest): row.id for row in result}


async def _references(sessions, tenant_id) -> dict[str, uuid.UUID]:
    async with sessions() as session:
        result = await session.execute(select(mailboxes.c.email_address, mailboxes.c.sealed_credential_id)
                                       .where(mailboxes.c.tenant_id == tenant_id))
        return {row.email_address: row.sealed_credential_id for row in result}


async def test_a_new_key_sealed_by_a_registration_while_the_settings_rewrite_the_old_row(sessions):
    """The settings path reads no row for the new key, a registration inserts it (not committed),
    the settings' rewrite of the old row to the new digest waits for it, and it commits: the
    rewrite must take the registration's row, not fail on the (tenant, digest) unique key."""
    tenant = await Rows(sessions).tenant()
    old, new = _secret(b"\x01" * 32), _secret(b"\x02" * 32)
    async with sessions() as session, session.begin():
        old_id = (await sealed_credentials.put_secrets(session, tenant.id, [old]))[old.digest]
        await add_mailbox(session, tenant.id, "early@example.com", credential_kind=CredentialKind.SERVICE_ACCOUNT,
                          sealed_credential_id=old_id)

    async def replace() -> uuid.UUID:
        async with transaction(sessions) as session:
            return await sealed_credentials.put_replacing(session, tenant.id, new, old_id)

    async with sessions() as registration, registration.begin():
        new_id = (await sealed_credentials.put_secrets(registration, tenant.id, [new]))[new.digest]
        await add_mailbox(registration, tenant.id, "late@example.com", credential_kind=CredentialKind.SERVICE_ACCOUNT,
                          sealed_credential_id=new_id)
        replacing = asyncio.create_task(replace())
        await blocked_on_a_lock(sessions)  # the rewrite waits on the registration's row
    assert await replacing == new_id

    rows = await _rows(sessions, tenant.id)
    assert rows[new.digest] == new_id and list(rows).count(new.digest) == 1
    # Every mailbox of the old key follows to the one row of the new key.
    assert await _references(sessions, tenant.id) == {"early@example.com": new_id, "late@example.com": new_id}


async def test_concurrent_registrations_of_one_new_key_share_one_row(sessions):
    """Two registrations seal the same new key at once: the second waits for the first's
    insert and takes its row (ON CONFLICT), both refer to it."""
    tenant = await Rows(sessions).tenant()
    new = _secret(b"\x03" * 32)

    async def register(address: str) -> uuid.UUID:
        async with transaction(sessions) as session:
            sealed_id = (await sealed_credentials.put_secrets(session, tenant.id, [new]))[new.digest]
            await add_mailbox(session, tenant.id, address, credential_kind=CredentialKind.SERVICE_ACCOUNT,
                              sealed_credential_id=sealed_id)
            return sealed_id

    async with sessions() as first, first.begin():
        first_id = (await sealed_credentials.put_secrets(first, tenant.id, [new]))[new.digest]
        await add_mailbox(first, tenant.id, "one@example.com", credential_kind=CredentialKind.SERVICE_ACCOUNT,
                          sealed_credential_id=first_id)
        second = asyncio.create_task(register("two@example.com"))
        await blocked_on_a_lock(sessions)
    assert await second == first_id
    assert await _rows(sessions, tenant.id) == {new.digest: first_id}


async def test_deleting_unused_rows_skips_the_ones_a_registration_is_about_to_use(sessions):
    """Rows x and y are unused. A registration locks x (it will refer to it), a `sweep` runs,
    then the registration asks for y as well. A sweep waiting for x would either hold y
    (deleted) while the registration waits for y, a deadlock that fails one of them, or
    delete nothing once x's reference is committed. The sweep leaves x and deletes y, the
    registration seals y anew; both commit, nothing refers to a deleted row."""
    tenant = await Rows(sessions).tenant()
    x, y = _secret(b"\x10" * 32), _secret(b"\x20" * 32)
    async with sessions() as session, session.begin():
        await sealed_credentials.put_secrets(session, tenant.id, [y])
        x_id = (await sealed_credentials.put_secrets(session, tenant.id, [x]))[x.digest]

    async def sweep() -> int:
        async with transaction(sessions) as session:
            return await sealed_credentials.sweep(session, tenant_id=tenant.id)

    async with sessions() as registration, registration.begin():
        assert (await sealed_credentials.put_secrets(registration, tenant.id, [x]))[x.digest] == x_id
        sweeping = asyncio.create_task(sweep())
        # A sweep that waited for x would be blocked here; one that skips it is done.
        blocked = asyncio.create_task(blocked_on_a_lock(sessions))
        await asyncio.wait([sweeping, blocked], return_when=asyncio.FIRST_COMPLETED)
        blocked.cancel()
        ids = await sealed_credentials.put_secrets(registration, tenant.id, [x, y])
        for address, digest in (("x@example.com", x.digest), ("y@example.com", y.digest)):
            await add_mailbox(registration, tenant.id, address, credential_kind=CredentialKind.SERVICE_ACCOUNT,
                              sealed_credential_id=ids[digest])
    assert await sweeping == 1  # y, unused and not locked

    rows = await _rows(sessions, tenant.id)
    assert rows == {x.digest: x_id, y.digest: ids[y.digest]}
    assert await _references(sessions, tenant.id) == {"x@example.com": x_id, "y@example.com": ids[y.digest]}


def _service_account(private_key: str) -> ServiceAccountCredential:
    return ServiceAccountCredential(subject="", info={
        "type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com", "private_key": private_key,
        "project_id": "p", "private_key_id": private_key})


async def _register_with(sessions, box: SecretBox, tenant_id, address: str, read: SealedCredential,
                         settings: GoogleSettings):
    """The write of a tenant-default registration that read `settings` and `read` (their row)
    before calling Gmail: the key it read, sealed, pinned to the row it came from."""
    credential = box.open(read, tenant_id=tenant_id)
    secret = box.seal_shared(ServiceAccountCredential(info=credential.info, subject=address))

    def rows_of(ids):
        return [mailboxes_store.MailboxUpsert(email_address=address, label_filter=LabelFilter(),
                                              credential_kind=CredentialKind.SERVICE_ACCOUNT,
                                              sealed_credential_id=ids[secret.digest])]

    [(mailbox, _)] = await registrations.save_registrations(
        sessions, tenant_id, [secret], rows_of, lambda upserted: [], replacing=False,
        opens=lambda stored: box.opens(stored, tenant_id=tenant_id), pinned={secret.digest: sealed_credentials.Pin(
            read.sealed_credential_id, settings.credential_id, settings.project_id)})
    async with reading(sessions) as session:
        stored = (await sealed_credentials.load_stored(session, tenant_id, [mailbox.id]))[mailbox.id]
    return box.open(stored, tenant_id=tenant_id).info["private_key"], stored.sealed_credential_id


async def test_a_tenant_default_registration_in_flight_while_the_tenant_key_is_replaced(sessions):
    """A registration with the tenant's defaults reads the settings (old key) and calls Gmail;
    meanwhile the operator sets a new key of the same service account (the settings' row is
    rewritten in place, and the old key may be deleted in Google right after); then the
    registration writes. Its mailbox must refer to the settings' row, now the new key, not
    to a row of its own holding the replaced key."""
    box = SecretBox([generate_key()])
    tenant = await Rows(sessions).tenant()
    common = dict(project_id="p", credential_id="sa@p.iam.gserviceaccount.com",
                  pubsub_topic="projects/p/topics/t", pubsub_subscription=None, push_audience=None)
    await google_settings.save_settings(sessions, tenant.id, secret=box.seal_shared(_service_account("OLD")), **common)
    (settings, read), _ = await registrations.registration_reads(sessions, tenant.id, ["late@example.com"])
    await google_settings.save_settings(sessions, tenant.id, secret=box.seal_shared(_service_account("NEW")), **common)

    used, row = await _register_with(sessions, box, tenant.id, "late@example.com", read, settings)
    assert (used, row) == ("NEW", read.sealed_credential_id)
    assert list((await _rows(sessions, tenant.id)).values()) == [read.sealed_credential_id]  # no row of the old key


async def test_a_tenant_default_registration_whose_settings_row_is_gone_seals_its_key(sessions):
    """The settings moved to another service account meanwhile and the old one's row, used by
    nothing, was deleted: the registration's key (still valid in Google) is sealed anew."""
    box = SecretBox([generate_key()])
    tenant = await Rows(sessions).tenant()
    common = dict(project_id="p", pubsub_topic="projects/p/topics/t", pubsub_subscription=None, push_audience=None)
    await google_settings.save_settings(sessions, tenant.id, secret=box.seal_shared(_service_account("FIRST")),
                                        credential_id="sa@p.iam.gserviceaccount.com", **common)
    (settings, read), _ = await registrations.registration_reads(sessions, tenant.id, ["late@example.com"])
    other = ServiceAccountCredential(subject="", info={**_service_account("OTHER").info,
                                                       "client_email": "other@p.iam.gserviceaccount.com"})
    await google_settings.save_settings(sessions, tenant.id, secret=box.seal_shared(other),
                                        credential_id="other@p.iam.gserviceaccount.com", **common)
    assert read.sealed_credential_id not in (await _rows(sessions, tenant.id)).values()

    used, row = await _register_with(sessions, box, tenant.id, "late@example.com", read, settings)
    assert used == "FIRST" and row != read.sealed_credential_id
    assert len(await _rows(sessions, tenant.id)) == 2


async def _read_old_key_with_a_new_keys_row(sessions):
    """A tenant whose settings hold the OLD key, a tenant-default registration's read of them
    (for late@example.com), and a row the tenant already has for the NEW key, the settings
    not yet moved to it: (box, tenant, the settings' save arguments, settings, the read,
    the NEW key's sealed secret, its row id)."""
    box = SecretBox([generate_key()])
    tenant = await Rows(sessions).tenant()
    common = dict(project_id="p", credential_id="sa@p.iam.gserviceaccount.com",
                  pubsub_topic="projects/p/topics/t", pubsub_subscription=None, push_audience=None)
    await google_settings.save_settings(sessions, tenant.id, secret=box.seal_shared(_service_account("OLD")), **common)
    (settings, read), _ = await registrations.registration_reads(sessions, tenant.id, ["late@example.com"])
    new_secret = box.seal_shared(_service_account("NEW"))
    async with transaction(sessions) as session:
        new_row = (await sealed_credentials.put_secrets(session, tenant.id, [new_secret]))[new_secret.digest]
    return box, tenant, common, settings, read, new_secret, new_row


async def test_a_tenant_default_registration_follows_the_settings_to_a_row_the_tenant_had_for_the_new_key(sessions):
    """As above, but the tenant already has a row for the new key (a mailbox registered with it
    explicitly): the settings' save moves the references to that row and deletes the one the
    registration read. The registration's mailbox must refer to the row the settings use now
    (the new key), not to the replaced key sealed anew, which fails once it is deleted in Google."""
    box, tenant, common, settings, read, new_secret, new_row = await _read_old_key_with_a_new_keys_row(sessions)
    await google_settings.save_settings(sessions, tenant.id, secret=new_secret, **common)
    assert list((await _rows(sessions, tenant.id)).values()) == [new_row]  # the row read is gone

    used, row = await _register_with(sessions, box, tenant.id, "late@example.com", read, settings)
    assert (used, row) == ("NEW", new_row)
    assert list((await _rows(sessions, tenant.id)).values()) == [new_row]  # no row of the old key


async def test_a_tenant_default_registration_writing_while_the_settings_move_its_references(sessions):
    """The tenant has a row for the new key; a tenant-default registration has locked the row
    it read (the settings' row) and written its mailbox, not committed, when the settings'
    save moves that row's references to the new key's row. The move waits for the
    registration, so its mailbox follows too; none is left on the old key's row."""
    box, tenant, common, settings, read, new_secret, new_row = await _read_old_key_with_a_new_keys_row(sessions)
    read_secret = box.seal_shared(ServiceAccountCredential(info=box.open(read, tenant_id=tenant.id).info,
                                                           subject="late@example.com"))
    pin = sealed_credentials.Pin(read.sealed_credential_id, settings.credential_id, settings.project_id)

    async with sessions() as registration, registration.begin():
        ids = await sealed_credentials.put_secrets(registration, tenant.id, [read_secret],
                                                   pinned={read_secret.digest: pin})
        assert ids == {read_secret.digest: read.sealed_credential_id}
        await add_mailbox(registration, tenant.id, "late@example.com", credential_kind=CredentialKind.SERVICE_ACCOUNT,
                          sealed_credential_id=ids[read_secret.digest])
        saving = asyncio.create_task(google_settings.save_settings(sessions, tenant.id, secret=new_secret, **common))
        await blocked_on_a_lock(sessions)  # the move waits for the registration's row
    await saving

    assert await _references(sessions, tenant.id) == {"late@example.com": new_row}
    assert list((await _rows(sessions, tenant.id)).values()) == [new_row]  # the old key's row went
