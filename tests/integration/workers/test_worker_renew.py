"""RenewWorker against real Postgres, with a scripted Gmail and a clock the test moves.

The simulator-backed tests (test_worker_renewal_pipeline.py) show the whole service
doing this; these pin the worker's decisions one by one.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from mailwatch.domain import errors
from mailwatch.domain.models import EventType, LabelFilter, MailboxState, OAuthCredential
from mailwatch.gmail.client import WatchResult
from mailwatch.gmail.budget import TenantBudgets
from mailwatch.lifecycle.schedule import next_renewal_at, renewal_key
from mailwatch.secrets import SecretBox, credential_kind, generate_key
from mailwatch.store import changes, mailboxes, renewal_claims, sealed_credentials, tenants
from mailwatch.store.models import mailboxes as mailboxes_table
from mailwatch.workers.renew import RenewWorker
from tests.fixtures.waiting import eventually, stays

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
TOPIC = "projects/p/topics/gmail"


class ManualClock:
    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


class ScriptedGmail:
    """users.watch answers from a script per address: an exception to raise, or success."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.failures: dict[str, list[BaseException]] = {}
        self.calls: list[tuple[str, str, uuid.UUID | None]] = []
        self.forgotten = 0
        self.gate: asyncio.Event | None = None
        self.budgets = TenantBudgets(0)  # no Gmail quota budget: no tenant is ever deferred

    def fail(self, email: str, *excs: BaseException) -> None:
        self.failures.setdefault(email, []).extend(excs)

    async def watch(self, credential, email, *, topic, label_filter, tenant_id=None) -> WatchResult:
        self.calls.append((email, topic, tenant_id))
        if self.gate is not None:
            await self.gate.wait()
        pending = self.failures.get(email)
        if pending:
            raise pending.pop(0)
        return WatchResult(history_id=9000 + len(self.calls), expiration=self.clock.now() + timedelta(days=7))

    def forget(self, credential, tenant_id=None) -> None:
        self.forgotten += 1


@pytest.fixture
def world(sessions):
    clock = ManualClock(T0)
    gmail = ScriptedGmail(clock)
    box = SecretBox([generate_key()])
    worker = RenewWorker(sessions=sessions, gmail=gmail, secret_box=box, topic=TOPIC, clock=clock, lease_seconds=60)

    async def add(email: str, *, due_in=timedelta(seconds=-1), expires_in=timedelta(days=6),
                  state: MailboxState = MailboxState.ACTIVE, tenant=None):
        credential = OAuthCredential(client_id="c", client_secret="s", refresh_token=f"r-{email}")
        async with sessions() as session, session.begin():
            if tenant is None:
                tenant = (await tenants.create_tenant(session, f"t-{uuid.uuid4().hex[:8]}")).id
            secret = box.seal_shared(credential)
            sealed_ids = await sealed_credentials.put_secrets(session, tenant, [secret])
            mailbox, _ = await mailboxes.upsert_mailbox(
                session, tenant, email_address=email, label_filter=LabelFilter(label_ids=("INBOX",)),
                credential_kind=credential_kind(credential), sealed_credential_id=sealed_ids[secret.digest],
                refresh_token_ciphertext=box.seal_refresh_token(credential),
                history_id=100, watch_expiration=clock.now() + expires_in, next_renewal_at=clock.now() + due_in,
            )
            if state is not MailboxState.ACTIVE:
                await session.execute(
                    update(mailboxes_table).where(mailboxes_table.c.id == mailbox.id).values(state=state.value)
                )
        return mailbox

    async def row(mailbox):
        async with sessions() as session:
            return (await session.execute(select(mailboxes_table).where(mailboxes_table.c.id == mailbox.id))).one()

    async def events(mailbox):
        async with sessions() as session:
            found = await changes.read_events(session, mailbox.tenant_id, 0, mailbox_ids=[mailbox.id])
        return [e for e in found if e.type is not EventType.WATCH_STARTED]

    class World:
        pass

    w = World()
    w.clock, w.gmail, w.worker, w.add, w.row, w.events, w.sessions = clock, gmail, worker, add, row, events, sessions
    return w


async def test_a_due_watch_is_renewed_in_one_write(world):
    mailbox = await world.add("due@example.com")
    later = await world.add("later@example.com", due_in=timedelta(hours=3))

    assert await world.worker.run_once() == 1
    assert world.gmail.calls == [("due@example.com", TOPIC, mailbox.tenant_id)]
    row = await world.row(mailbox)
    assert row.watch_expiration == T0 + timedelta(days=7)
    assert row.next_renewal_at == next_renewal_at(T0, row.watch_expiration, key=renewal_key(mailbox.tenant_id, "due@example.com"))
    assert T0 + timedelta(hours=12) <= row.next_renewal_at < T0 + timedelta(hours=36)
    assert row.renew_attempts == 0 and row.last_error is None
    (renewed,) = await world.events(mailbox)
    assert renewed.type is EventType.WATCH_RENEWED
    assert renewed.history_id == 100  # the synced position, not the watch's: streams stay in history order
    assert renewed.detail["expiration"] == (T0 + timedelta(days=7)).isoformat()
    assert renewed.detail["watch_history_id"] == "9001"

    assert await world.worker.run_once() == 0  # nothing else is due
    assert (await world.row(later)).watch_expiration == T0 + timedelta(days=6)


async def test_stopped_and_auth_failed_mailboxes_are_never_renewed(world):
    await world.add("stopped@example.com", state=MailboxState.STOPPED)
    await world.add("failed@example.com", state=MailboxState.AUTH_FAILED)
    world.clock.advance(timedelta(days=3))
    assert await world.worker.run_once() == 0
    assert world.gmail.calls == []


async def test_failures_back_off_honour_retry_after_and_clear_on_success(world):
    mailbox = await world.add("busy@example.com")
    world.gmail.fail("busy@example.com", errors.GmailRateLimited("watch: Gmail answered 429", retry_after=300))

    assert await world.worker.run_once() == 1
    row = await world.row(mailbox)
    assert row.next_renewal_at >= T0 + timedelta(seconds=300)
    assert row.renew_attempts == 1
    assert (row.last_error_reason, row.last_error) == ("GMAIL_RATE_LIMITED", "watch: Gmail answered 429")
    assert row.next_attempt_at == row.next_renewal_at
    assert await world.events(mailbox) == []

    world.clock.advance(timedelta(seconds=299))
    assert await world.worker.run_once() == 0  # not before Retry-After
    world.clock.current = row.next_renewal_at
    assert await world.worker.run_once() == 1
    row = await world.row(mailbox)
    assert row.renew_attempts == 0 and row.last_error is None
    assert row.last_error_reason is None and row.next_attempt_at is None
    assert [e.type for e in await world.events(mailbox)] == [EventType.WATCH_RENEWED]


async def test_gmails_retry_time_holds_back_renewal_and_sync_even_past_the_watch_expiry(world, sessions):
    mailbox = await world.add("locked@example.com", expires_in=timedelta(minutes=5))
    retry_at = T0 + timedelta(minutes=30)
    world.gmail.fail("locked@example.com", errors.GmailRateLimited("watch: Gmail answered 429", retry_at=retry_at))
    assert await world.worker.run_once() == 1
    row = await world.row(mailbox)
    assert row.next_renewal_at == retry_at == row.gmail_retry_at == row.next_attempt_at
    # The sync claim honours it too: no Gmail call for the mailbox before Gmail's time.
    from mailwatch.store import sync_claims

    async with sessions() as session, session.begin():
        await session.execute(update(mailboxes_table).where(mailboxes_table.c.id == mailbox.id)
                              .values(sync_due_at=T0))
    world.clock.current = retry_at - timedelta(seconds=1)
    assert await world.worker.run_once() == 0
    async with sessions() as session, session.begin():
        assert await sync_claims.claim_due_syncs(session, owner="o", now=world.clock.now(),
                                          lease=timedelta(minutes=1), limit=10) == []
    world.clock.current = retry_at
    assert await world.worker.run_once() == 1
    row = await world.row(mailbox)
    assert row.gmail_retry_at is None and row.last_error is None


async def test_refused_access_ends_in_access_refused_once(world):
    mailbox = await world.add("refused@example.com")
    world.gmail.fail("refused@example.com", errors.GmailAccessRefused(
        "watch: Gmail answered 403 domainPolicy: The domain administrators have disabled Gmail apps.",
        metadata={"gmail_reason": "domainPolicy", "http_status": "403"}))
    assert await world.worker.run_once() == 1
    row = await world.row(mailbox)
    assert row.state == MailboxState.ACCESS_REFUSED.value and row.sync_due_at is None
    assert row.last_error_reason == "GMAIL_ACCESS_REFUSED" and row.next_attempt_at is None
    assert world.gmail.forgotten == 0  # the credentials are fine; access is not
    (refused,) = await world.events(mailbox)
    assert refused.type is EventType.ACCESS_REFUSED
    assert refused.detail["gmail_reason"] == "domainPolicy" and "disabled Gmail apps" in refused.detail["message"]
    world.clock.advance(timedelta(days=2))
    assert await world.worker.run_once() == 0
    assert len(world.gmail.calls) == 1


async def test_backoff_grows_and_is_jittered(world):
    mailbox = await world.add("flaky@example.com", expires_in=timedelta(days=6))
    world.gmail.fail("flaky@example.com", *[errors.GmailUnavailable("watch: Gmail answered 500") for _ in range(4)])
    delays = []
    for _ in range(4):
        assert await world.worker.run_once() == 1
        row = await world.row(mailbox)
        delays.append(row.next_renewal_at - world.clock.now())
        world.clock.current = row.next_renewal_at
    # base 60 s, doubling, each within [ceiling/2, ceiling]
    for attempt, delay in enumerate(delays, start=1):
        ceiling = 60 * 2 ** (attempt - 1)
        assert ceiling / 2 <= delay.total_seconds() <= ceiling, delays
    assert (await world.row(mailbox)).renew_attempts == 4


async def test_a_lapsed_watch_is_reported_once_then_renewed(world):
    mailbox = await world.add("lapse@example.com", expires_in=timedelta(minutes=3))
    world.gmail.fail("lapse@example.com", *[errors.GmailUnavailable("watch: Gmail answered 500") for _ in range(5)])
    expiration = T0 + timedelta(minutes=3)

    for _ in range(5):  # keep failing, past the expiration
        assert await world.worker.run_once() == 1
        row = await world.row(mailbox)
        assert row.next_renewal_at <= max(expiration, world.clock.now() + timedelta(seconds=960))
        world.clock.current = row.next_renewal_at
    assert world.clock.now() > expiration
    types = [e.type for e in await world.events(mailbox)]
    # Expiring within the warning horizon from the first failure: warned once, then reported once.
    assert types == [EventType.WATCH_EXPIRING, EventType.WATCH_EXPIRED]
    expiring, expired = await world.events(mailbox)
    assert expiring.detail == {"expiration": expiration.isoformat(), "reason": "GMAIL_UNAVAILABLE",
                               "failed_attempts": "1"}
    assert expired.detail == {"expiration": expiration.isoformat(), "reason": "GMAIL_UNAVAILABLE"}
    assert (await world.row(mailbox)).state == MailboxState.ACTIVE.value  # still synced (by polling)

    assert await world.worker.run_once() == 1  # Gmail is back
    assert [e.type for e in await world.events(mailbox)] == [
        EventType.WATCH_EXPIRING, EventType.WATCH_EXPIRED, EventType.WATCH_RENEWED]
    row = await world.row(mailbox)
    assert row.watch_expiration == world.clock.now() + timedelta(days=7) and row.last_error is None


async def test_the_first_failure_after_expiry_is_clamped_to_the_expiration(world):
    mailbox = await world.add("edge@example.com", expires_in=timedelta(seconds=20))
    world.gmail.fail("edge@example.com", errors.GmailUnavailable("watch: Gmail answered 500"))
    assert await world.worker.run_once() == 1
    assert (await world.row(mailbox)).next_renewal_at == T0 + timedelta(seconds=20)


async def test_a_watch_found_expired_is_reported_before_the_renewal(world):
    mailbox = await world.add("down@example.com", due_in=-timedelta(days=8), expires_in=-timedelta(days=1))
    assert await world.worker.run_once() == 1
    found = await world.events(mailbox)
    assert [e.type for e in found] == [EventType.WATCH_EXPIRED, EventType.WATCH_RENEWED]
    assert found[0].detail["reason"] == "RENEWED_LATE"


async def test_revoked_credentials_mark_auth_failed_once_and_stop_renewals(world):
    mailbox = await world.add("revoked@example.com")
    world.gmail.fail("revoked@example.com", errors.GmailAuthFailed("watch: credentials rejected (invalid_grant)"))
    assert await world.worker.run_once() == 1
    row = await world.row(mailbox)
    assert row.state == MailboxState.AUTH_FAILED.value and row.sync_due_at is None
    assert (row.last_error_reason, row.last_error) == ("GMAIL_AUTH_FAILED", "watch: credentials rejected (invalid_grant)")
    assert world.gmail.forgotten == 1
    (failed,) = await world.events(mailbox)
    assert failed.type is EventType.AUTH_FAILED and failed.detail["reason"] == "GMAIL_AUTH_FAILED"

    world.clock.advance(timedelta(days=2))
    assert await world.worker.run_once() == 0
    assert len(world.gmail.calls) == 1


async def test_a_claim_lost_to_re_registration_writes_nothing(world, sessions):
    mailbox = await world.add("raced@example.com")
    async with sessions() as session, session.begin():
        (claim,) = await renewal_claims.claim_due_renewals(session, now=T0, lease=timedelta(minutes=1), limit=10)
    # Meanwhile the tenant registers the mailbox again (a fresh watch, a new renewal time).
    async with sessions() as session, session.begin():
        await session.execute(
            update(mailboxes_table).where(mailboxes_table.c.id == mailbox.id)
            .values(next_renewal_at=T0 + timedelta(hours=20), watch_expiration=T0 + timedelta(days=7))
        )
    assert await world.worker.renew_claimed(claim) == "lease_lost"
    assert await world.events(mailbox) == []
    assert (await world.row(mailbox)).next_renewal_at == T0 + timedelta(hours=20)


async def test_a_crashed_replicas_claim_is_taken_over_after_the_lease(world, sessions):
    mailbox = await world.add("orphan@example.com")
    async with sessions() as session, session.begin():
        assert len(await renewal_claims.claim_due_renewals(session, now=T0, lease=timedelta(seconds=60), limit=10)) == 1
    # ...and that replica dies before any outcome.
    assert await world.worker.run_once() == 0
    world.clock.advance(timedelta(seconds=60))
    assert await world.worker.run_once() == 1
    assert [e.type for e in await world.events(mailbox)] == [EventType.WATCH_RENEWED]


async def test_two_workers_divide_the_due_mailboxes(world, sessions):
    async with sessions() as session, session.begin():
        tenant = (await tenants.create_tenant(session, "many")).id
    for n in range(30):
        await world.add(f"m{n}@example.com", tenant=tenant)
    other = RenewWorker(sessions=sessions, gmail=world.gmail, secret_box=world.worker.secret_box, topic=TOPIC,
                        clock=world.clock, batch_size=20)
    world.worker.batch_size = 20
    world.gmail.gate = asyncio.Event()  # hold every watch call until both workers have claimed

    first = asyncio.create_task(world.worker.run_once())
    # The second claims once the first's claim has committed (its watch calls wait at the gate):
    # a claim whose snapshot predates another's commit finds the tenant's first `batch_size` due
    # rows locked and skips them, and claims nothing that round.
    await eventually(lambda: len(world.gmail.calls) == world.worker.concurrency, what="the first worker claimed")
    second = asyncio.create_task(other.run_once())
    # Both have claimed once both hold their full concurrency of watch calls at the gate.
    await eventually(lambda: len(world.gmail.calls) == world.worker.concurrency + other.concurrency,
                     what="both workers hold watch calls")
    world.gmail.gate.set()
    claimed = await asyncio.gather(first, second)
    assert sorted(claimed) == [10, 20]
    assert sorted(email for email, _, _ in world.gmail.calls) == sorted(f"m{n}@example.com" for n in range(30))


async def _leases_passed_and_kept(world, added, lease: float) -> None:
    """Move the clock five leases on, then wait until a heartbeat has moved each of `added`'s
    claims past the new now."""
    world.clock.advance(timedelta(seconds=5 * lease))

    async def extended() -> bool:
        return all([(await world.row(mailbox)).next_renewal_at > world.clock.now() for mailbox in added])

    await eventually(extended, timeout=10 * lease, what="the held claims' leases extended")


async def test_claims_held_past_their_lease_are_not_claimed_again_by_another_worker(world, sessions):
    """A round claims more than it runs at once (a batch, `concurrency` at a time); with Gmail
    slow, the claims waiting for a slot and those running outlive their lease. The worker's
    heartbeat keeps them: another worker claims none of them, and each mailbox gets one
    users.watch and one WATCH_RENEWED."""
    lease = 3.0  # a heartbeat every second
    worker = RenewWorker(sessions=sessions, gmail=world.gmail, secret_box=world.worker.secret_box, topic=TOPIC,
                         clock=world.clock, lease_seconds=lease, batch_size=10, concurrency=2)
    other = RenewWorker(sessions=sessions, gmail=world.gmail, secret_box=world.worker.secret_box, topic=TOPIC,
                        clock=world.clock, lease_seconds=lease)
    async with sessions() as session, session.begin():
        tenant = (await tenants.create_tenant(session, "slow")).id
    added = [await world.add(f"slow{n}@example.com", tenant=tenant) for n in range(6)]
    world.gmail.gate = asyncio.Event()  # Gmail answers nothing until the gate opens

    round_ = asyncio.create_task(worker.run_once())
    try:
        await eventually(lambda: len(world.gmail.calls) == 2, what="the first two watch calls running")
        # Every claim's lease has passed, and the heartbeat moves each on (a worker without one: never).
        await _leases_passed_and_kept(world, added, lease)
        assert await other.run_once() == 0
    finally:
        world.gmail.gate.set()
    assert await round_ == 6
    assert sorted(email for email, _, _ in world.gmail.calls) == sorted(m.email_address for m in added)
    for mailbox in added:
        assert [e.type for e in await world.events(mailbox)] == [EventType.WATCH_RENEWED]


async def test_a_claim_raising_does_not_end_the_rounds_hold_on_the_others(world, sessions):
    """One claim of a round raising (e.g. its outcome's write hit a database error) must not
    stop the heartbeat and drop the fences of the round's other claims while they still run:
    they would then write with the lease they were claimed with, which the heartbeat moved,
    and a watch made at Gmail would be recorded as a lost lease (and made again later)."""
    lease = 3.0
    later = asyncio.Event()
    raised = asyncio.Event()
    outcomes: dict[str, str] = {}
    started: set[str] = set()

    class Worker(RenewWorker):
        async def renew_claimed(self, claim):
            started.add(claim.mailbox.email_address)
            if claim.mailbox.email_address == "fail0@example.com":
                await world.gmail.gate.wait()
                raised.set()
                raise RuntimeError("writing the outcome failed")
            await later.wait()
            outcomes[claim.mailbox.email_address] = outcome = await super().renew_claimed(claim)
            return outcome

    worker = Worker(sessions=sessions, gmail=world.gmail, secret_box=world.worker.secret_box, topic=TOPIC,
                    clock=world.clock, lease_seconds=lease, batch_size=10, concurrency=2)
    async with sessions() as session, session.begin():
        tenant = (await tenants.create_tenant(session, "fail")).id
    added = [await world.add(f"fail{n}@example.com", tenant=tenant) for n in range(2)]
    world.gmail.gate = asyncio.Event()
    round_ = asyncio.create_task(worker.run_once())
    await eventually(lambda: len(started) == 2, what="both claims running")
    await _leases_passed_and_kept(world, added, lease)
    world.gmail.gate.set()
    await raised.wait()
    await stays(lambda: not round_.done(), 1.0, what="the round waiting for its other claim")
    later.set()
    with pytest.raises(RuntimeError):
        await round_
    assert outcomes["fail1@example.com"] == "renewed"
    assert [e.type for e in await world.events(added[1])] == [EventType.WATCH_RENEWED]


async def test_a_registration_left_out_for_its_shared_watch_is_held_while_the_watch_is_renewed(world, sessions):
    """Two tenants' registrations of one address share one Gmail watch: a round renews it once
    and leaves the other claim out. With Gmail slow past the lease, that claim is kept too, so
    another replica does not claim it, find the watch not yet fresh and call users.watch again."""
    lease = 3.0
    worker = RenewWorker(sessions=sessions, gmail=world.gmail, secret_box=world.worker.secret_box, topic=TOPIC,
                         clock=world.clock, lease_seconds=lease, batch_size=10, concurrency=2)
    other = RenewWorker(sessions=sessions, gmail=world.gmail, secret_box=world.worker.secret_box, topic=TOPIC,
                        clock=world.clock, lease_seconds=lease)
    added = [await world.add("shared@example.com") for _ in range(2)]  # each in a tenant of its own
    world.gmail.gate = asyncio.Event()

    round_ = asyncio.create_task(worker.run_once())
    try:
        await eventually(lambda: len(world.gmail.calls) == 1, what="the shared watch's one call running")
        await _leases_passed_and_kept(world, added, lease)
        assert await other.run_once() == 0
    finally:
        world.gmail.gate.set()
    assert await round_ == 2
    assert [email for email, _, _ in world.gmail.calls] == ["shared@example.com"]


class ReplyLosingProxy:
    """A TCP proxy to Postgres: once `arm`ed, the next statement whose text holds `marker`
    reaches Postgres (and, in autocommit, commits), and its connection is cut when Postgres
    answers, so the client never hears how it ended: a reply lost on the network."""

    def __init__(self, host: str, port: int, marker: bytes) -> None:
        self.target = (host, port)
        self.marker = marker
        self.armed = False
        self.cut = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _relay(self, client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        marked = False

        async def up() -> None:
            nonlocal marked
            while data := await client_reader.read(65536):
                if self.armed and self.marker in data:
                    self.armed, marked = False, True
                server_writer.write(data)
                await server_writer.drain()

        async def down() -> None:
            while data := await server_reader.read(65536):
                if marked:
                    client_writer.transport.abort()
                    self.cut.set()
                    return
                client_writer.write(data)
                await client_writer.drain()

        try:
            await asyncio.wait([asyncio.ensure_future(up()), asyncio.ensure_future(down())],
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            client_writer.transport.abort()
            server_writer.transport.abort()


async def test_a_heartbeat_that_committed_and_lost_its_reply_still_lets_the_renewal_be_recorded(
    world, database_url
):
    """The heartbeat's UPDATE commits and its connection is lost before the reply: the worker
    cannot tell whether the fence moved. It chose the new value before sending, so the outcome
    is fenced on either: the renewal made at Gmail is recorded (not `lease_lost`, which would
    leave the mailbox due again after the lease: a second users.watch, 100 units)."""
    from sqlalchemy.engine import make_url

    from mailwatch.store import create_engine, session_factory

    url = make_url(database_url)
    proxy = ReplyLosingProxy(url.host, url.port, marker=b"held (id, fence)")  # the heartbeat's statement
    engine = create_engine(str(url.set(port=await proxy.start())), pool_size=2, max_overflow=2)

    lease = 3.0  # a heartbeat every second

    class Ticking:
        """The world's clock, a millisecond on at every look: each heartbeat moves the fence to a
        value of its own, never to the one it had."""

        def now(self):
            world.clock.advance(timedelta(milliseconds=1))
            return world.clock.now()

    worker = RenewWorker(sessions=session_factory(engine), gmail=world.gmail, secret_box=world.worker.secret_box,
                         topic=TOPIC, clock=Ticking(), lease_seconds=lease)
    mailbox = await world.add("lost-reply@example.com")
    world.gmail.gate = asyncio.Event()
    proxy.armed = True  # the round's first heartbeat loses its reply
    round_ = asyncio.create_task(worker.run_once())
    try:
        await eventually(lambda: len(world.gmail.calls) == 1, what="the watch call running")
        claimed_until = (await world.row(mailbox)).next_renewal_at
        await asyncio.wait_for(proxy.cut.wait(), timeout=30)

        async def moved():
            return (await world.row(mailbox)).next_renewal_at != claimed_until

        await eventually(moved, what="the heartbeat whose reply was lost committed")
    finally:
        world.gmail.gate.set()
    try:
        assert await round_ == 1
        row = await world.row(mailbox)
        assert [e.type for e in await world.events(mailbox)] == [EventType.WATCH_RENEWED]
        assert row.next_renewal_at > world.clock.now() + timedelta(hours=1)  # tomorrow's slot, not the lease
    finally:
        await engine.dispose()
        await proxy.close()
