"""Mailbox queries: register (upsert), tenant isolation, stop, paging, credentials."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from mailwatch.domain.errors import NotFound
from mailwatch.domain.models import CredentialKind, LabelFilter, LabelFilterBehavior, MailboxState
from mailwatch.store import mailboxes, sealed_credentials
from tests.fixtures.factory import Rows, fake_sealed_credential

pytestmark = pytest.mark.integration

EXPIRES = datetime(2030, 1, 8, tzinfo=timezone.utc)
RENEW = datetime(2030, 1, 2, tzinfo=timezone.utc)


async def _register(sessions, tenant_id, address="Alice@Example.com", **overrides):
    values = dict(
        email_address=address,
        label_filter=LabelFilter(("INBOX",), LabelFilterBehavior.INCLUDE),
        credential_kind=CredentialKind.OAUTH,
        refresh_token_ciphertext=b"ciphertext-1",
        history_id=100,
        watch_expiration=EXPIRES,
        next_renewal_at=RENEW,
    )
    values.update(overrides)
    async with sessions() as session, session.begin():
        if "sealed_credential_id" not in values:
            values["sealed_credential_id"] = await fake_sealed_credential(session, tenant_id)
        return await mailboxes.upsert_mailbox(session, tenant_id, **values)


async def _own_secret(session, tenant_id, mailbox_id):
    stored = await sealed_credentials.load_stored(session, tenant_id, [mailbox_id])
    if mailbox_id not in stored:
        raise NotFound("mailbox not found")
    return stored[mailbox_id].refresh_token_ciphertext


async def test_register_creates_a_lower_cased_active_mailbox(sessions):
    tenant = await Rows(sessions).tenant("acme")
    mailbox, created = await _register(sessions, tenant.id)
    assert created
    assert mailbox.email_address == "alice@example.com"
    assert mailbox.state is MailboxState.ACTIVE
    assert mailbox.label_filter == LabelFilter(("INBOX",), LabelFilterBehavior.INCLUDE)
    assert mailbox.credential_kind is CredentialKind.OAUTH
    assert (mailbox.history_id, mailbox.notified_history_id) == (100, None)
    assert (mailbox.watch_expiration, mailbox.next_renewal_at) == (EXPIRES, RENEW)
    assert mailbox.sync_due_at is None and mailbox.sync_attempts == 0
    assert mailbox.created.tzinfo is not None

    async with sessions() as session:
        assert await mailboxes.get_mailbox(session, tenant.id, mailbox.id) == mailbox
        found = await mailboxes.find_mailboxes_by_addresses(session, tenant.id, [" ALICE@example.COM ", "bob@example.com"])
        assert found == {"alice@example.com": mailbox}
        assert await _own_secret(session, tenant.id, mailbox.id) == b"ciphertext-1"


async def test_register_again_updates_the_same_row_and_clears_errors(sessions):
    tenant = await Rows(sessions).tenant("acme")
    first, _ = await _register(sessions, tenant.id)
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "UPDATE mailboxes SET state = 'AUTH_FAILED', last_error = 'invalid_grant', "
                "last_error_at = now(), sync_attempts = 3, backoff_until = now() + interval '1 hour', "
                "history_id = 150"
            )
        )
    second, created = await _register(
        sessions,
        tenant.id,
        address="alice@example.com",
        label_filter=LabelFilter(("SPAM",), LabelFilterBehavior.EXCLUDE),
        refresh_token_ciphertext=b"ciphertext-2",
        history_id=200,
    )
    assert not created
    assert second.id == first.id
    assert second.state is MailboxState.ACTIVE
    assert second.last_error is None and second.last_error_at is None
    assert second.sync_attempts == 0 and second.backoff_until is None
    assert second.label_filter == LabelFilter(("SPAM",), LabelFilterBehavior.EXCLUDE)
    # Recovering from AUTH_FAILED keeps the synced position and catches up.
    assert second.history_id == 150
    assert second.sync_due_at is not None
    assert second.updated >= first.updated
    async with sessions() as session:
        assert await _own_secret(session, tenant.id, first.id) == b"ciphertext-2"


async def test_register_after_stop_takes_the_new_baseline(sessions):
    tenant = await Rows(sessions).tenant("acme")
    first, _ = await _register(sessions, tenant.id)
    async with sessions() as session, session.begin():
        stopped, changed = await mailboxes.mark_stopped(session, tenant.id, first.id)
    assert changed and stopped.state is MailboxState.STOPPED
    again, created = await _register(sessions, tenant.id, history_id=900)
    assert not created and again.id == first.id
    assert again.state is MailboxState.ACTIVE and again.history_id == 900 and again.sync_due_at is None


async def test_register_without_rewatch_keeps_watch_fields(sessions):
    tenant = await Rows(sessions).tenant("acme")
    await _register(sessions, tenant.id)
    again, _ = await _register(sessions, tenant.id, history_id=None, watch_expiration=None, next_renewal_at=None)
    assert (again.history_id, again.watch_expiration, again.next_renewal_at) == (100, EXPIRES, RENEW)


async def test_tenants_cannot_see_each_others_mailboxes(sessions):
    a = await Rows(sessions).tenant("a")
    b = await Rows(sessions).tenant("b")
    mailbox_a, _ = await _register(sessions, a.id)
    mailbox_b, created = await _register(sessions, b.id)  # same address, other tenant
    assert created and mailbox_b.id != mailbox_a.id

    async with sessions() as session, session.begin():
        with pytest.raises(NotFound) as caught:
            await mailboxes.get_mailbox(session, b.id, mailbox_a.id)
        assert caught.value.reason == "NOT_FOUND"
        with pytest.raises(NotFound):
            await _own_secret(session, b.id, mailbox_a.id)
        with pytest.raises(NotFound):
            await mailboxes.mark_stopped(session, b.id, mailbox_a.id)
        assert await mailboxes.find_mailboxes_by_addresses(session, b.id, ["alice@example.com"]) == {
            "alice@example.com": mailbox_b}
        assert [m.id for m in await mailboxes.list_mailboxes(session, a.id)] == [mailbox_a.id]
    async with sessions() as session:
        assert (await mailboxes.get_mailbox(session, a.id, mailbox_a.id)).state is MailboxState.ACTIVE


async def test_mark_stopped_is_idempotent(sessions):
    tenant = await Rows(sessions).tenant("acme")
    mailbox, _ = await _register(sessions, tenant.id)
    async with sessions() as session, session.begin():
        await session.execute(text("UPDATE mailboxes SET sync_due_at = now()"))
        first, changed = await mailboxes.mark_stopped(session, tenant.id, mailbox.id)
        second, changed_again = await mailboxes.mark_stopped(session, tenant.id, mailbox.id)
    assert (changed, changed_again) == (True, False)
    assert first.state is second.state is MailboxState.STOPPED
    assert first.sync_due_at is None
    async with sessions() as session:
        with pytest.raises(NotFound):
            await mailboxes.mark_stopped(session, tenant.id, uuid.uuid4())


async def test_list_pages_with_keyset_and_filters_by_state(sessions):
    tenant = await Rows(sessions).tenant("acme")
    registered = []
    for n in range(7):
        mailbox, _ = await _register(sessions, tenant.id, address=f"user{n}@example.com")
        registered.append(mailbox)
    async with sessions() as session, session.begin():
        await mailboxes.mark_stopped(session, tenant.id, registered[2].id)

    seen, after = [], None
    async with sessions() as session:
        while True:
            page = await mailboxes.list_mailboxes(session, tenant.id, after=after, limit=3)
            if not page:
                break
            seen.extend(page)
            after = (page[-1].created, page[-1].id)
        assert [m.id for m in seen] == [m.id for m in sorted(registered, key=lambda m: (m.created, m.id))]

        stopped = await mailboxes.list_mailboxes(session, tenant.id, states=[MailboxState.STOPPED])
        active = await mailboxes.list_mailboxes(session, tenant.id, states=[MailboxState.ACTIVE], limit=100)
        either = await mailboxes.list_mailboxes(
            session, tenant.id, states=[MailboxState.ACTIVE, MailboxState.STOPPED], limit=100
        )
        failed = await mailboxes.list_mailboxes(session, tenant.id, states=[MailboxState.AUTH_FAILED])
    assert [m.id for m in stopped] == [registered[2].id]
    assert len(active) == 6 and len(either) == 7 and failed == []


async def test_register_for_unknown_tenant_is_not_found(sessions):
    with pytest.raises(NotFound):
        await _register(sessions, uuid.uuid4(), sealed_credential_id=uuid.uuid4())


async def test_state_check_constraint(sessions):
    tenant = await Rows(sessions).tenant("acme")
    await _register(sessions, tenant.id)
    from sqlalchemy.exc import IntegrityError

    async with sessions() as session:
        with pytest.raises(IntegrityError):
            await session.execute(text("UPDATE mailboxes SET state = 'PAUSED'"))


async def test_updated_moves_on_core_update(sessions):
    tenant = await Rows(sessions).tenant("acme")
    mailbox, _ = await _register(sessions, tenant.id)
    async with sessions() as session, session.begin():
        stopped, _ = await mailboxes.mark_stopped(session, tenant.id, mailbox.id)
    assert stopped.updated > mailbox.updated - timedelta(seconds=0)
    assert stopped.updated != mailbox.updated


async def test_upsert_many_writes_every_row_in_one_call_and_answers_in_input_order(sessions):
    tenant = await Rows(sessions).tenant("acme")
    existing, _ = await _register(sessions, tenant.id, "Bob@Example.com", history_id=7)
    async with sessions() as session, session.begin():
        sealed_id = await fake_sealed_credential(session, tenant.id)
    rows = [
        mailboxes.MailboxUpsert(email_address=address, label_filter=LabelFilter(), credential_kind=CredentialKind.OAUTH,
                                sealed_credential_id=sealed_id, refresh_token_ciphertext=address.lower().encode(),
                                history_id=500, watch_expiration=EXPIRES, next_renewal_at=RENEW)
        for address in ("zed@example.com", "BOB@example.com", "amy@example.com")
    ]
    async with sessions() as session, session.begin():
        written = await mailboxes.upsert_mailboxes(session, tenant.id, rows)

    assert [(m.email_address, created) for m, created in written] == [
        ("zed@example.com", True), ("bob@example.com", False), ("amy@example.com", True)]
    bob = written[1][0]
    assert bob.id == existing.id and bob.history_id == 7  # an ACTIVE mailbox keeps its sync position
    assert bob.label_filter == LabelFilter()
    async with sessions() as session:
        found = await mailboxes.find_mailboxes_by_addresses(session, tenant.id, ["amy@example.com", "ZED@example.com"])
        assert sorted(found) == ["amy@example.com", "zed@example.com"]
        stored = await sealed_credentials.load_stored(session, tenant.id, [m.id for m, _ in written])
    assert {i: s.refresh_token_ciphertext for i, s in stored.items()} == {m.id: m.email_address.encode() for m, _ in written}
    assert {s.sealed_credential_id for s in stored.values()} == {sealed_id}


async def test_upsert_many_refuses_an_address_twice(sessions):
    tenant = await Rows(sessions).tenant("acme")
    row = mailboxes.MailboxUpsert(email_address="a@example.com", label_filter=LabelFilter(),
                                  credential_kind=CredentialKind.OAUTH, sealed_credential_id=uuid.uuid4())
    async with sessions() as session, session.begin():
        with pytest.raises(ValueError):
            await mailboxes.upsert_mailboxes(session, tenant.id, [row, row])


async def test_set_options_changes_only_the_tenants_active_mailboxes_and_keeps_their_position(sessions):
    a = await Rows(sessions).tenant("a")
    b = await Rows(sessions).tenant("b")
    active, _ = await _register(sessions, a.id, "active@example.com")
    stopped, _ = await _register(sessions, a.id, "stopped@example.com")
    other_tenants, _ = await _register(sessions, b.id, "active@example.com")
    async with sessions() as session, session.begin():
        await mailboxes.mark_stopped(session, a.id, stopped.id)
        updated = await mailboxes.set_options(session, a.id, [active.id, stopped.id, other_tenants.id],
                                              metadata_headers=("Subject",), include_drafts=True)
    # A mailbox no longer ACTIVE is left for the caller to watch again; another tenant's is not touched.
    assert list(updated) == [active.id]
    changed = updated[active.id]
    assert (changed.metadata_headers, changed.include_drafts) == (("Subject",), True)
    assert (changed.history_id, changed.watch_expiration, changed.state) == (
        active.history_id, active.watch_expiration, MailboxState.ACTIVE)
    async with sessions() as session:
        untouched = await mailboxes.get_mailbox(session, b.id, other_tenants.id)
    assert (untouched.metadata_headers, untouched.include_drafts) == (None, False)
