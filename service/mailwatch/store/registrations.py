"""The reads and writes of registering and stopping mailboxes (`lifecycle`):
each verb opens its own session; the Gmail calls happen between them.

- `registration_reads`: the tenant's sealed settings and the addresses' rows;
- `stored_and_sharing`: stored credentials of unchanged-looking rows and the
  registrations sharing each address's watch;
- `save_registrations`: the rows in one upsert, their backfill and their events
  in one insert, one transaction (a stream never sees a row without its event);
- `set_options`: what an unchanged registration delivers beyond its filter, in place;
- `mailbox_to_stop` / `stop_mailbox`: what stopping needs to tell Gmail, then
  the state change and MAILBOX_STOPPED, one transaction;
- `mailbox_with_credentials`: a mailbox and its stored credential (GetMessage);
- `append_test_event`: SendTestEvent's TEST event.
"""

from __future__ import annotations

import uuid
from typing import Callable, Mapping, Sequence

from mailwatch.domain.backfill import BackfillRequest
from mailwatch.domain.models import (
    ChangeEvent, EventType, GoogleSettings, Mailbox, MailboxState, NewEvent, SealedCredential,
)
from mailwatch.domain.projects import topic_project
from mailwatch.secrets import SealedSecret
from mailwatch.store import backfills, changes, google_settings, mailboxes, sealed_credentials, watch_groups
from mailwatch.store.db import Sessions, reading, transaction
from mailwatch.store.watch_groups import GroupMember


async def registration_reads(
    sessions: Sessions, tenant_id: uuid.UUID, email_addresses: Sequence[str]
) -> tuple[tuple[GoogleSettings, SealedCredential] | None, dict[str, Mailbox]]:
    """The tenant's settings with their sealed credential (or None), and the rows of
    `email_addresses` by normalized address."""
    async with reading(sessions) as session:
        settings = await google_settings.find_settings(session, tenant_id)
        return settings, await mailboxes.find_mailboxes_by_addresses(session, tenant_id, email_addresses)


async def stored_and_sharing(
    sessions: Sessions, tenant_id: uuid.UUID, mailbox_ids: Sequence[uuid.UUID],
    groups: Sequence[tuple[str, str, uuid.UUID | None]], *, deployment_topic: str,
) -> tuple[dict[uuid.UUID, SealedCredential], list[list[GroupMember]]]:
    """The stored credentials of `mailbox_ids`, and `watch_groups.groups_members` of `groups`."""
    async with reading(sessions) as session:
        stored = await sealed_credentials.load_stored(session, tenant_id, mailbox_ids)
        return stored, await watch_groups.groups_members(session, groups, deployment_topic=deployment_topic)


async def save_registrations(
    sessions: Sessions, tenant_id: uuid.UUID, secrets: Sequence[SealedSecret],
    rows_of: Callable[[dict[bytes, uuid.UUID]], Sequence[mailboxes.MailboxUpsert]],
    events_of: Callable[[list[tuple[Mailbox, bool]]], list[NewEvent]], *, replacing: bool,
    opens: sealed_credentials.Opens, backfill: BackfillRequest | None = None,
    pinned: Mapping[bytes, sealed_credentials.Pin] | None = None,
) -> list[tuple[Mailbox, bool]]:
    """One transaction: the sealed rows of `secrets` (reused by digest; `opens` and `pinned`
    as in `sealed_credentials.put_secrets`), the mailbox
    rows `rows_of(row id by digest)` upserted, their `backfill` (if any) stored,
    `events_of(upserted)` appended; and, when `replacing` credentials of existing
    mailboxes, the tenant's sealed rows no longer used deleted. (mailbox, created) per row."""
    async with transaction(sessions) as session:
        ids = await sealed_credentials.put_secrets(session, tenant_id, secrets, opens=opens, pinned=pinned)
        upserted = await mailboxes.upsert_mailboxes(session, tenant_id, rows_of(ids))
        if backfill is not None:
            await backfills.request_backfills(session, tenant_id, [mailbox.id for mailbox, _ in upserted], backfill)
        await changes.append_events(session, tenant_id, events_of(upserted))
        if replacing:
            await sealed_credentials.sweep(session, tenant_id=tenant_id)
    return upserted


async def set_options(
    sessions: Sessions, tenant_id: uuid.UUID, mailbox_ids: Sequence[uuid.UUID], *,
    metadata_headers: tuple[str, ...] | None, include_drafts: bool,
) -> dict[uuid.UUID, Mailbox]:
    """`mailboxes.set_options` in its own transaction."""
    async with transaction(sessions) as session:
        return await mailboxes.set_options(session, tenant_id, mailbox_ids,
                                           metadata_headers=metadata_headers, include_drafts=include_drafts)


async def mailbox_with_credentials(
    sessions: Sessions, tenant_id: uuid.UUID, mailbox_id: uuid.UUID
) -> tuple[Mailbox, SealedCredential | None]:
    """The tenant's mailbox and its stored credential (None once STOPPED); NotFound for another tenant's."""
    async with reading(sessions) as session:
        mailbox = await mailboxes.get_mailbox(session, tenant_id, mailbox_id)
        return mailbox, (await sealed_credentials.load_stored(session, tenant_id, [mailbox_id])).get(mailbox_id)


async def mailbox_to_stop(
    sessions: Sessions, tenant_id: uuid.UUID, mailbox_id: uuid.UUID, *, deployment_topic: str
) -> tuple[Mailbox, SealedCredential | None, list[GroupMember]]:
    """The mailbox; unless it is STOPPED already (then None and []), its stored
    credential and the other ACTIVE registrations sharing its watch."""
    async with reading(sessions) as session:
        mailbox = await mailboxes.get_mailbox(session, tenant_id, mailbox_id)
        if mailbox.state is MailboxState.STOPPED:
            return mailbox, None, []
        stored = (await sealed_credentials.load_stored(session, tenant_id, [mailbox_id])).get(mailbox_id)
        sharing = await watch_groups.group_members(
            session, mailbox.email_address, topic_project(mailbox.watch_topic or deployment_topic) or "",
            deployment_topic=deployment_topic, exclude=mailbox_id,
        )
        return mailbox, stored, sharing


async def stop_mailbox(sessions: Sessions, tenant_id: uuid.UUID, mailbox_id: uuid.UUID) -> Mailbox:
    """Mark it STOPPED (its credential forgotten, the tenant's sealed rows nothing uses
    any more deleted) and, the first time, append MAILBOX_STOPPED: one transaction."""
    async with transaction(sessions) as session:
        mailbox, changed = await mailboxes.mark_stopped(session, tenant_id, mailbox_id)
        if changed:
            await sealed_credentials.sweep(session, tenant_id=tenant_id)
            await changes.append_events(session, tenant_id, [
                NewEvent(mailbox_id=mailbox.id, email_address=mailbox.email_address,
                         type=EventType.MAILBOX_STOPPED, history_id=mailbox.history_id),
            ])
    return mailbox


async def append_test_event(
    sessions: Sessions, tenant_id: uuid.UUID, mailbox_id: uuid.UUID | None, note: str
) -> ChangeEvent:
    """Append a TEST event (for one of the tenant's mailboxes, or the tenant as a whole): one transaction."""
    async with transaction(sessions) as session:
        mailbox = None if mailbox_id is None else await mailboxes.get_mailbox(session, tenant_id, mailbox_id)
        [event] = await changes.append_events(session, tenant_id, [
            NewEvent(
                mailbox_id=None if mailbox is None else mailbox.id,
                email_address=None if mailbox is None else mailbox.email_address,
                type=EventType.TEST, detail={"note": note} if note else {},
            )
        ])
    return event
