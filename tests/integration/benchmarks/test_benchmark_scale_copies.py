"""benchmarks/scale.py's direct-INSERT copies on a real Postgres: each copy is a row
of its template's tenant referencing that tenant's one credential row (no key of
its own), with its own renewal slot; and the storage report refuses a table where
mailboxes hold other credential rows (its bytes per mailbox would not be what a
registration costs)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from benchmarks.scale import _insert_directly, _storage
from mailwatch.domain.models import CredentialKind
from tests.fixtures.factory import add_mailbox, fake_sealed_credential

pytestmark = pytest.mark.integration


async def _registered(sessions, tenant_id, address: str, sealed_credential_id=None):
    """A service-account mailbox of the tenant, as a registration stores it: (its tenant, its credential row)."""
    async with sessions() as session, session.begin():
        if sealed_credential_id is None:
            sealed_credential_id = await fake_sealed_credential(session, tenant_id, CredentialKind.SERVICE_ACCOUNT)
        await add_mailbox(session, tenant_id, address, credential_kind=CredentialKind.SERVICE_ACCOUNT,
                          sealed_credential_id=sealed_credential_id)
    return tenant_id, sealed_credential_id


def _plain(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://")


async def test_copies_reference_their_tenants_one_credential_row(database_url, sessions, factory):
    a, b = await factory.tenant(), await factory.tenant()
    templates = {"user0@scale.example.com": await _registered(sessions, a.id, "user0@scale.example.com"),
                 "user1@scale.example.com": await _registered(sessions, b.id, "user1@scale.example.com")}
    copies = [(f"bulk{n}@scale.example.com", f"user{n % 2}@scale.example.com") for n in range(2, 7)]

    before = datetime.now(timezone.utc)
    _insert_directly(_plain(database_url), copies, first=2, chunk=2)  # three chunks

    with psycopg.connect(_plain(database_url)) as conn:
        rows = conn.execute(
            "SELECT email_address, gmail_address, tenant_id, sealed_credential_id, next_renewal_at FROM mailboxes "
            "WHERE email_address LIKE 'bulk%%' ORDER BY email_address").fetchall()
        credentials = conn.execute("SELECT count(*) FROM sealed_credentials").fetchone()[0]
    assert [row[0] for row in rows] == [address for address, _ in copies]
    assert all(row[1] == row[0] for row in rows)
    for (address, template_address), row in zip(copies, rows):
        assert (row[2], row[3]) == templates[template_address], address
    assert credentials == 2
    slots = [row[4] for row in rows]
    assert len(set(slots)) == len(slots), "each copy has its own renewal slot"
    assert all(before + timedelta(hours=1) <= slot <= before + timedelta(days=1, seconds=60) for slot in slots)

    storage = _storage(_plain(database_url))
    assert storage["mailboxes"] == 7
    assert storage["sealed credential rows"] == 2


async def test_the_storage_report_refuses_mailboxes_with_keys_of_their_own(database_url, sessions, factory):
    tenant = await factory.tenant()
    await _registered(sessions, tenant.id, "user0@scale.example.com")
    await _registered(sessions, tenant.id, "user1@scale.example.com")  # a second key row of the same tenant

    with pytest.raises(RuntimeError, match="one credential row per tenant"):
        _storage(_plain(database_url))
