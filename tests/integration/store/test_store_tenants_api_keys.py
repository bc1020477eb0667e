"""Tenants and API keys against a real Postgres."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from sqlalchemy import text

from mailwatch.domain.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from mailwatch.domain.models import CredentialKind, LabelFilter, LabelFilterBehavior
from mailwatch.secrets import SealedSecret
from mailwatch.store import api_keys, google_settings, mailboxes, tenants

pytestmark = pytest.mark.integration


async def test_create_get_list_tenants(sessions):
    async with sessions() as session, session.begin():
        beta = await tenants.create_tenant(session, "beta")
        alpha = await tenants.create_tenant(session, "alpha")
    assert beta.created.tzinfo is not None and beta.created.utcoffset().total_seconds() == 0
    assert beta.pruned_through_sequence == 0

    async with sessions() as session:
        assert await tenants.get_tenant(session, alpha.id) == alpha
        assert await tenants.get_tenant_by_name(session, "beta") == beta
        assert [t.name for t in await tenants.list_tenants(session)] == ["alpha", "beta"]
        with pytest.raises(NotFound):
            await tenants.get_tenant(session, uuid.uuid4())
        with pytest.raises(NotFound):
            await tenants.get_tenant_by_name(session, "gamma")


async def test_tenant_pages_are_in_code_point_order_whatever_the_collation(sessions):
    """Page tokens hold a name and compare in Python's order: SQL must order the same way."""
    for name in ("b", "B", "a", "Ä"):
        await tenants.add_tenant(sessions, name)
    assert [t.name for t in await tenants.tenant_page(sessions)] == sorted(["b", "B", "a", "Ä"])
    assert [t.name for t in await tenants.tenant_page(sessions, after="B", limit=2)] == ["a", "b"]


async def test_duplicate_tenant_name_is_already_exists_and_keeps_the_transaction(sessions):
    async with sessions() as session, session.begin():
        await tenants.create_tenant(session, "acme")
        with pytest.raises(AlreadyExists) as caught:
            await tenants.create_tenant(session, "acme")
        assert caught.value.reason == "ALREADY_EXISTS"
        # The savepoint rolled back only the failed insert.
        other = await tenants.create_tenant(session, "other")
    async with sessions() as session:
        assert {t.name for t in await tenants.list_tenants(session)} == {"acme", "other"}
        assert (await tenants.get_tenant(session, other.id)).name == "other"


async def test_empty_tenant_name_is_invalid(sessions):
    async with sessions() as session:
        with pytest.raises(InvalidArgument):
            await tenants.create_tenant(session, "  ")


async def test_api_key_lifecycle(sessions):
    async with sessions() as session, session.begin():
        tenant = await tenants.create_tenant(session, "acme")
        key, plaintext = await api_keys.create_api_key(session, tenant.id)
    assert plaintext.startswith("mwk_") and len(plaintext) >= 4 + 43
    assert key.prefix == plaintext[: len(key.prefix)] and len(key.prefix) < len(plaintext) // 2
    assert key.tenant_id == tenant.id and key.revoked_at is None

    async with sessions() as session:
        assert await api_keys.authenticate_api_key(session, plaintext) == tenant.id
        assert await api_keys.list_api_keys(session, tenant.id) == [key]

    async with sessions() as session, session.begin():
        revoked = await api_keys.revoke_api_key(session, key.id)
    assert revoked.revoked_at is not None
    async with sessions() as session, session.begin():
        again = await api_keys.revoke_api_key(session, key.id)
    assert again.revoked_at == revoked.revoked_at  # idempotent: first revocation time kept

    async with sessions() as session:
        with pytest.raises(Unauthenticated):
            await api_keys.authenticate_api_key(session, plaintext)
        with pytest.raises(NotFound):
            await api_keys.revoke_api_key(session, uuid.uuid4())


@pytest.mark.parametrize("presented", [None, "", "mwk_", "mwk_unknown-key-value", "Bearer x", "mwk_" + "a" * 500])
async def test_unknown_keys_are_unauthenticated(sessions, presented):
    async with sessions() as session:
        with pytest.raises(Unauthenticated) as caught:
            await api_keys.authenticate_api_key(session, presented)
    assert caught.value.reason == "UNAUTHENTICATED"


async def test_only_the_hash_is_stored(sessions):
    async with sessions() as session, session.begin():
        tenant = await tenants.create_tenant(session, "acme")
        _, plaintext = await api_keys.create_api_key(session, tenant.id)
    async with sessions() as session:
        dump = (await session.execute(text("SELECT CAST(row_to_json(k) AS text) FROM api_keys AS k"))).scalar_one()
        stored = (await session.execute(text("SELECT key_hash FROM api_keys"))).scalar_one()
    secret_part = plaintext[len("mwk_") + 8 :]
    assert plaintext not in dump and secret_part not in dump
    assert bytes(stored) == hashlib.sha256(plaintext.encode()).digest()


async def test_keys_are_scoped_to_their_tenant(sessions):
    async with sessions() as session, session.begin():
        a = await tenants.create_tenant(session, "a")
        b = await tenants.create_tenant(session, "b")
        key_a, plain_a = await api_keys.create_api_key(session, a.id)
        key_b, plain_b = await api_keys.create_api_key(session, b.id)
    async with sessions() as session, session.begin():
        assert await api_keys.authenticate_api_key(session, plain_a) == a.id
        assert await api_keys.authenticate_api_key(session, plain_b) == b.id
        assert await api_keys.list_api_keys(session, a.id) == [key_a]
        with pytest.raises(NotFound):
            await api_keys.revoke_api_key(session, key_b.id, tenant_id=a.id)
        assert (await api_keys.revoke_api_key(session, key_b.id, tenant_id=b.id)).revoked_at is not None


async def test_key_for_missing_tenant_is_not_found(sessions):
    async with sessions() as session, session.begin():
        with pytest.raises(NotFound):
            await api_keys.create_api_key(session, uuid.uuid4())
        # transaction still usable after the savepoint rollback
        await tenants.create_tenant(session, "still-fine")


async def test_a_tenants_rows_written_for_an_unknown_tenant_are_not_found(sessions):
    """Each write that references tenants turns the foreign-key violation into NotFound naming the tenant."""
    unknown = uuid.uuid4()
    writes = [
        lambda session: api_keys.create_api_key(session, unknown),
        lambda session: google_settings.put_settings(
            session, unknown, project_id="p",
            secret=SealedSecret(CredentialKind.SERVICE_ACCOUNT, b"d", b"c"), credential_id="id", pubsub_topic="projects/p/topics/t",
            pubsub_subscription=None, push_audience=None,
        ),
        lambda session: mailboxes.upsert_mailbox(
            session, unknown, email_address="a@example.com", label_filter=LabelFilter((), LabelFilterBehavior.INCLUDE),
            credential_kind=CredentialKind.OAUTH, sealed_credential_id=uuid.uuid4(),
        ),
    ]
    for write in writes:
        with pytest.raises(NotFound) as caught:
            async with sessions() as session, session.begin():
                await write(session)
        assert (str(caught.value), caught.value.metadata) == ("tenant not found", {"tenant_id": str(unknown)})
