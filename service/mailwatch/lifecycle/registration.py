"""RegisterMailbox, BatchRegisterMailboxes and StopMailbox: the Gmail calls, then one transaction.

Gmail is called before anything is written, so a refused watch leaves no
half-registered mailbox; the mailbox rows and their lifecycle events are
written together so a stream never sees one without the other. A single
registration is a batch of one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Callable, Sequence

from mailwatch.clock import Clock
from mailwatch.domain import addresses, errors
from mailwatch.domain.backfill import BackfillRequest
from mailwatch.domain.models import (
    Credential,
    EventType,
    LabelFilter,
    Mailbox,
    MailboxState,
    NewEvent,
    SealedCredential,
    ServiceAccountCredential,
    TenantDefaultCredential,
)
from mailwatch.domain.projects import resolve_credential, topic_project, union_filter, watch_topic_for
from mailwatch.gmail.client import GmailClient, WatchResult
from mailwatch.lifecycle.schedule import next_renewal_at, renewal_key
from mailwatch.lifecycle.shared_watch import shared_watch_expiration, watch_taking_over
from mailwatch.secrets import SecretBox, credential_kind, shared_digest
from mailwatch.store import backfills, mailboxes
from mailwatch.store import registrations as registrations_store
from mailwatch.store.db import Sessions
from mailwatch.store.sealed_credentials import Pin
from mailwatch.store.watch_groups import GroupMember
from mailwatch.usage_limits import UsageLimits

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Plan:
    """An address to watch: its credential and topic, its row if any, and the
    registrations sharing its watch (filled in by the same read)."""

    email_address: str
    credential: Credential = field(repr=False)
    topic: str
    existing: Mailbox | None
    sharing: list[GroupMember] = field(default_factory=list)
    # The tenant's settings' sealed row when the credential is the tenant's default: the mailbox
    # refers to that row, which a new key of the same identity rewrites in place (even one set
    # while this registration calls Gmail with the key read before), or to the row that took
    # its references (`sealed_credentials.put_secrets`).
    settings_pin: Pin | None = None


@dataclass(frozen=True)
class _Options:
    """What a registration asks beyond its filter, stored on the row and compared to find an
    unchanged registration: message metadata headers (None: none) and draft versions; and the
    backfill to store with the rows (not compared: an unchanged registration stores it on its own)."""

    metadata_headers: tuple[str, ...] | None = None
    include_drafts: bool = False
    backfill: BackfillRequest | None = None

    def same_as(self, mailbox: Mailbox) -> bool:
        return (mailbox.metadata_headers, mailbox.include_drafts) == (self.metadata_headers, self.include_drafts)


@dataclass(frozen=True, eq=False)
class _Retune:
    """An ACTIVE registration asked again with the same filter, topic and credential but
    other options: updated in place, with no Gmail call (its watch already reports what
    it wants) and no new start (its cursor stays, so nothing between is skipped)."""

    plan: _Plan


@dataclass(frozen=True, eq=False)
class _Watched:
    plan: _Plan
    gmail_address: str
    watch: WatchResult


@dataclass
class Registrations:
    """Registering and stopping mailboxes: Gmail first, then the store."""

    sessions: Sessions
    gmail: GmailClient
    secret_box: SecretBox
    clock: Clock
    topic: str
    # The tenant's registrations a minute (usage_limits.py); None: unlimited.
    limits: UsageLimits | None = None
    # Registration transactions at once. Each is short, and more than the pool
    # keeps open overflow it: opening (and discarding) those extra connections
    # costs a visible share of a registration's CPU (docs/performance.md), while
    # waiting here for a slot costs nothing.
    database_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8), repr=False)
    # Told when a registration stored a backfill (the backfill worker claims it at once).
    on_backfill: Callable[[], None] = lambda: None

    async def register(
        self, tenant_id: uuid.UUID, email_address: str, label_filter: LabelFilter,
        requested: Credential | TenantDefaultCredential, *, metadata_headers: tuple[str, ...] | None = None,
        include_drafts: bool = False, backfill: BackfillRequest | None = None,
    ) -> Mailbox:
        (outcome,) = await self.register_many(
            tenant_id, label_filter, [(email_address, requested)], metadata_headers=metadata_headers,
            include_drafts=include_drafts, backfill=backfill)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def register_many(
        self,
        tenant_id: uuid.UUID,
        label_filter: LabelFilter,
        registrations: Sequence[tuple[str, Credential | TenantDefaultCredential] | Exception],
        *,
        metadata_headers: tuple[str, ...] | None = None,
        include_drafts: bool = False,
        backfill: BackfillRequest | None = None,
        concurrency: int = 16,
    ) -> list[Mailbox | Exception]:
        """Register each (address, credential) (addresses distinct); a failure (any
        exception) is returned in that address's place and does not stop the others.

        Entries that already are errors (refused by validation) are returned as
        they are. Three steps, each done once for the whole batch:

        1. one read: the tenant's settings, the addresses' existing rows (an
           unchanged ACTIVE registration returns as it is, with no Gmail call;
           one asking only for other options has them set in place, in one
           transaction for the batch) and the registrations that share each
           address's watch;
        2. Gmail: getProfile and users.watch per address, `concurrency`
           addresses at a time (users.watch costs 100 of the project's
           1,200,000 quota units per minute, and the pool's threads are shared
           with syncs);
        3. one transaction: every watched row in one upsert, every
           WATCH_STARTED event in one insert (so a stream never sees a row
           without its event), and the `backfill`, if requested. If it
           fails, each row is written on its own, so one bad row fails only
           its own address. An unchanged registration's backfill is stored
           on its own (`backfills.request_backfill`; the same request again
           keeps the stored backfill where it is).

        Batched because statements and a commit per address would make the
        database driver most of a registration's CPU, with every address
        queued on the tenant's change-log lock in its own transaction. What is
        left is mostly per address and Gmail's: the token grant (each delegated
        subject needs its own token: a JWT signed with the key, parsed once per
        key, and one POST), getProfile and users.watch over HTTP, ingesting the
        notification each watch triggers, and the batch's one write (shares in
        docs/performance.md).
        """
        outcomes: list = list(registrations)
        options = _Options(metadata_headers, include_drafts, backfill)
        todo = [index for index, item in enumerate(registrations) if not isinstance(item, Exception)]
        if not todo:
            return outcomes
        if self.limits is not None:
            # The whole call is refused past the tenant's rate (RegistrationRateLimited), before any work.
            await self.limits.take_registrations(tenant_id, len(todo))
        try:
            async with self.database_slots:
                planned = await self._plan(tenant_id, label_filter, options,
                                           [registrations[index] for index in todo])
        except Exception as exc:  # noqa: BLE001 - e.g. the database is unreachable: every address says so
            planned = [exc] * len(todo)
        planned = await self._retune(tenant_id, options, planned)
        slots = asyncio.Semaphore(concurrency)

        async def watched(plan: _Plan | Mailbox | Exception) -> _Watched | Mailbox | Exception:
            if not isinstance(plan, _Plan):
                return plan
            async with slots:
                try:
                    return await self._watch(tenant_id, label_filter, plan)
                except Exception as exc:  # noqa: BLE001 - answered for this address alone
                    return exc

        results = await asyncio.gather(*(watched(plan) for plan in planned))
        writes = [result for result in results if isinstance(result, _Watched)]
        written = await self._write_all(tenant_id, label_filter, options, writes)
        for index, result in zip(todo, results):
            outcomes[index] = written[id(result)] if isinstance(result, _Watched) else result
        if backfill is not None:
            unchanged = [result.id for result in results if isinstance(result, Mailbox)]
            if unchanged:
                await backfills.request_backfill(self.sessions, tenant_id, unchanged, backfill)
            if any(isinstance(outcome, Mailbox) for outcome in outcomes):
                self.on_backfill()
        return outcomes

    async def _plan(
        self, tenant_id: uuid.UUID, label_filter: LabelFilter, options: _Options,
        registrations: Sequence[tuple[str, Credential | TenantDefaultCredential]],
    ) -> list[_Plan | _Retune | Mailbox | Exception]:
        """Per address: what to watch (a _Plan), the unchanged mailbox (nothing to do), its
        options to set (a _Retune), or why not."""
        sealed, existing = await registrations_store.registration_reads(
            self.sessions, tenant_id, [address for address, _ in registrations])
        settings = None if sealed is None else replace(
            sealed[0], credential=self.secret_box.open(sealed[1], tenant_id=tenant_id))
        plans: list[_Plan | Mailbox | Exception] = []
        for email_address, requested in registrations:
            try:
                credential = resolve_credential(requested, settings, email_address)
                # Refused here, before Gmail is asked, when the credentials' project has no topic.
                topic = watch_topic_for(credential, from_tenant_defaults=isinstance(requested, TenantDefaultCredential),
                                        settings=settings, deployment_topic=self.topic)
            except Exception as exc:  # noqa: BLE001 - answered for this address alone
                plans.append(exc)
                continue
            plans.append(_Plan(email_address, credential, topic,
                               existing.get(addresses.normalize(email_address)),
                               settings_pin=Pin(sealed[1].sealed_credential_id, sealed[0].credential_id,
                                                sealed[0].project_id)
                               if isinstance(requested, TenantDefaultCredential) else None))
        # Same registration again (same filter, topic and credential): no Gmail call; only
        # its options to set when they differ.
        same = [plan for plan in plans if isinstance(plan, _Plan) and plan.existing is not None
                and plan.existing.state is MailboxState.ACTIVE and plan.existing.label_filter == label_filter
                and (plan.existing.watch_topic or self.topic) == plan.topic]
        # Registrations of an address in one Google project (any tenant) share one
        # Gmail watch: it must report what any of them wants. Read for every planned
        # address with the stored credentials, and ignored for those found unchanged.
        candidates = [plan for plan in plans if isinstance(plan, _Plan)]
        stored, sharing = await registrations_store.stored_and_sharing(
            self.sessions, tenant_id, [plan.existing.id for plan in same],
            [(plan.email_address, topic_project(plan.topic) or "",
              plan.existing.id if plan.existing is not None else None) for plan in candidates],
            deployment_topic=self.topic,
        )
        for plan, members in zip(candidates, sharing):
            plan.sharing = members
        unchanged = {id(plan) for plan in same
                     if plan.existing.id in stored and self._stored_credential(stored[plan.existing.id]) == plan.credential}
        return [plan if id(plan) not in unchanged else plan.existing if options.same_as(plan.existing) else _Retune(plan)
                for plan in plans]

    async def _retune(self, tenant_id: uuid.UUID, options: _Options,
                      planned: list[_Plan | _Retune | Mailbox | Exception]) -> list[_Plan | Mailbox | Exception]:
        """Each _Retune's mailbox with its new options, set in one transaction; one no longer
        ACTIVE by then goes back to being watched (its _Plan)."""
        retunes = [item.plan.existing.id for item in planned if isinstance(item, _Retune)]
        if not retunes:
            return planned
        try:
            async with self.database_slots:
                updated: dict | Exception = await registrations_store.set_options(
                    self.sessions, tenant_id, retunes,
                    metadata_headers=options.metadata_headers, include_drafts=options.include_drafts)
        except Exception as exc:  # noqa: BLE001 - answered for each of these addresses
            updated = exc

        def settled(item: _Plan | _Retune | Mailbox | Exception) -> _Plan | Mailbox | Exception:
            if not isinstance(item, _Retune):
                return item
            if isinstance(updated, Exception):
                return updated
            return updated.get(item.plan.existing.id, item.plan)

        return [settled(item) for item in planned]

    async def _watch(self, tenant_id: uuid.UUID, label_filter: LabelFilter, plan: _Plan) -> _Watched:
        gmail_address, history_id = await self._gmail_address(tenant_id, plan.email_address, plan.credential)
        shared = shared_watch_expiration(plan.sharing, topic=plan.topic, label_filter=label_filter,
                                         now=self.clock.now())
        if shared is not None:
            # Another registration of this address and project keeps a watch that already reports
            # everything this one wants: no second users.watch (100 units); start from now.
            return _Watched(plan, gmail_address, WatchResult(history_id=history_id, expiration=shared))
        watch = await watch_taking_over(
            self.gmail, plan.credential, plan.email_address, topic=plan.topic,
            label_filter=union_filter([label_filter, *(member.label_filter for member in plan.sharing)]),
            tenant_id=tenant_id,
        )
        return _Watched(plan, gmail_address, watch)

    async def _write_all(
        self, tenant_id: uuid.UUID, label_filter: LabelFilter, options: _Options, writes: list[_Watched],
    ) -> dict[int, Mailbox | Exception]:
        """Each write's mailbox (or error), keyed by id(write): all in one transaction,
        or, when that fails, one transaction each so that the failure is its own."""
        if not writes:
            return {}
        try:
            return dict(zip(map(id, writes), await self._write(tenant_id, label_filter, options, writes)))
        except Exception as exc:  # noqa: BLE001 - answered per address below
            if len(writes) == 1:
                return {id(writes[0]): exc}
            # Only the type: the statement's parameters (sealed credentials) stay out of logs.
            log.warning("writing a batch of %d registrations failed (%s); writing each on its own",
                        len(writes), type(exc).__name__, extra={"tenant_id": str(tenant_id)})
        written: dict[int, Mailbox | Exception] = {}
        for write in writes:
            try:
                (written[id(write)],) = await self._write(tenant_id, label_filter, options, [write])
            except Exception as exc:  # noqa: BLE001 - answered for this address alone
                written[id(write)] = exc
        return written

    async def _write(
        self, tenant_id: uuid.UUID, label_filter: LabelFilter, options: _Options, writes: list[_Watched],
    ) -> list[Mailbox]:
        """Gmail is called before anything is written, so a refused watch leaves no
        half-registered mailbox; rows and their events are written together."""
        now = self.clock.now()
        # The shared part of each credential is sealed once per distinct key (most
        # batches: one) and stored once per tenant; each row keeps only its own part.
        digests = [shared_digest(write.plan.credential) for write in writes]
        secrets = {}
        for digest, write in zip(digests, writes):
            if digest not in secrets:
                secrets[digest] = self.secret_box.seal_shared(write.plan.credential)

        def rows_of(sealed_ids: dict[bytes, uuid.UUID]) -> list[mailboxes.MailboxUpsert]:
            return [self._row(tenant_id, label_filter, options, write, sealed_ids[digest], now)
                    for digest, write in zip(digests, writes)]

        def events_of(upserted: list[tuple[Mailbox, bool]]) -> list[NewEvent]:
            return [
                NewEvent(mailbox_id=mailbox.id, email_address=mailbox.email_address,
                         type=EventType.WATCH_STARTED, history_id=write.watch.history_id, detail={
                             "expiration": write.watch.expiration.isoformat(),
                             "registration": "created" if created else "updated",
                             "previous_state": write.plan.existing.state.value if write.plan.existing else "",
                         })
                for write, (mailbox, created) in zip(writes, upserted)
            ]

        async with self.database_slots:
            upserted = await registrations_store.save_registrations(
                self.sessions, tenant_id, list(secrets.values()), rows_of, events_of,
                replacing=any(write.plan.existing is not None for write in writes),
                opens=lambda stored: self.secret_box.opens(stored, tenant_id=tenant_id), backfill=options.backfill,
                pinned={digest: write.plan.settings_pin for digest, write in zip(digests, writes)
                        if write.plan.settings_pin is not None})
        return [mailbox for mailbox, _ in upserted]

    def _row(self, tenant_id: uuid.UUID, label_filter: LabelFilter, options: _Options, write: _Watched,
             sealed_id: uuid.UUID, now: datetime) -> mailboxes.MailboxUpsert:
        credential = write.plan.credential
        return mailboxes.MailboxUpsert(
            email_address=write.plan.email_address,
            label_filter=label_filter,
            credential_kind=credential_kind(credential),
            sealed_credential_id=sealed_id,
            refresh_token_ciphertext=self.secret_box.seal_refresh_token(credential),
            subject=credential.subject if isinstance(credential, ServiceAccountCredential) else None,
            history_id=write.watch.history_id,
            watch_expiration=write.watch.expiration,
            next_renewal_at=next_renewal_at(now, write.watch.expiration,
                                            key=renewal_key(tenant_id, write.plan.email_address)),
            metadata_headers=options.metadata_headers,
            include_drafts=options.include_drafts,
            watch_topic=write.plan.topic,
            gmail_address=write.gmail_address,
        )

    async def _gmail_address(self, tenant_id: uuid.UUID, email_address: str,
                             credential: Credential) -> tuple[str, int]:
        """The address Gmail knows the authorised user by (its notifications name it), and the
        mailbox's current history id.

        Gmail is called as "me", so the credential alone picks the mailbox: an
        OAuth grant of another user, or a service account told to impersonate
        another address, would watch that other mailbox under this name. So the
        user must be the registered address, or have it among its send-as
        aliases (registered under an alias: Gmail names the primary address).
        """
        profile = await self.gmail.profile(credential, email_address, tenant_id=tenant_id)
        canonical = addresses.normalize(profile.email_address)
        registered = addresses.normalize(email_address)
        if canonical != registered:
            send_as = await self.gmail.send_as_addresses(credential, email_address, tenant_id=tenant_id)
            if registered not in {addresses.normalize(address) for address in send_as}:
                raise errors.GmailAddressMismatch(
                    f"the credentials act for the Gmail user {canonical}, and {email_address} is neither that "
                    f"address nor one of its send-as aliases",
                    metadata={"gmail_address": canonical},
                )
        return canonical, profile.history_id

    def _stored_credential(self, stored: SealedCredential) -> Credential | None:
        """The stored credential, or None when no configured key opens it any more:
        registering again with fresh credentials is then exactly the way out."""
        try:
            return self.secret_box.open(stored)
        except errors.CredentialUndecryptable:
            return None

    async def stop(self, tenant_id: uuid.UUID, mailbox_id: uuid.UUID) -> Mailbox:
        # users.stop would end the watch for every registration sharing it (same
        # address and project, any tenant): leave it to them while one is ACTIVE.
        # Its filter narrows at their next renewal; until then they may sync for
        # changes only this one wanted, and find nothing of theirs.
        mailbox, stored, still_needed = await registrations_store.mailbox_to_stop(
            self.sessions, tenant_id, mailbox_id, deployment_topic=self.topic)
        if stored is None:
            return mailbox  # already STOPPED
        try:
            if not still_needed:
                await self.gmail.stop(
                    self.secret_box.open(stored, tenant_id=tenant_id), mailbox.email_address, tenant_id=tenant_id
                )
        except (errors.GmailAuthFailed, errors.GmailMailboxNotFound, errors.GmailPermissionDenied,
                errors.CredentialUndecryptable):
            # Gmail cannot be told, but a dead watch expires by itself within 7
            # days and notifications for a STOPPED mailbox are ignored.
            pass
        return await registrations_store.stop_mailbox(self.sessions, tenant_id, mailbox_id)
