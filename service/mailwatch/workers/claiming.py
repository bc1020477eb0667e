"""The shape of a worker that claims due mailboxes and calls Gmail for each.

Sync and renew share it: a claim is one short transaction (`claim`), and the
claims are processed concurrently, at most `concurrency` at a time (`process`,
which returns a bounded outcome label and never raises: a mailbox's failure is
recorded on that mailbox). Each is timed and counted in the subclass's own
metrics.

With `pipelined` (sync), the running loop (`tick`) claims only as many mailboxes as it has free slots
and does not wait for them: a mailbox that becomes due while others are being
processed is claimed as soon as it is woken and a slot is free. Claiming a
whole batch and waiting for all of it (what `run_once` does, for tests and
one-off rounds) would make a notification that arrives during a round wait for
the round's slowest sync, and leave the claimed mailboxes beyond the free slots
leased while they wait: under a steady stream of notifications that wait would
be most of the change-to-stream latency (docs/performance.md). When
every free slot was filled, more may be due: the loop ticks again as soon as
one frees up. Renewal keeps whole rounds: its claims of one round are merged
by shared watch (`to_process`), which small claims would split.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from prometheus_client import Counter, Histogram

from mailwatch.clock import Clock, SystemClock
from mailwatch.gmail.client import GmailClient
from mailwatch.secrets import SecretBox
from mailwatch.domain.backoff import BackoffPolicy
from mailwatch.store.db import Sessions
from mailwatch.workers.loop import LoopWorker, log_failure

log = logging.getLogger(__name__)

Claim = TypeVar("Claim")


class ClaimingWorker(LoopWorker, Generic[Claim]):
    #: Set by each subclass: outcomes by label, and the time to process one claim.
    outcomes: Counter
    seconds: Histogram
    #: Retry pacing when the constructor is given none.
    default_backoff: BackoffPolicy = BackoffPolicy()
    #: Claim into free slots as they free up (True), or whole rounds: claim a batch, wait for all of it.
    pipelined: bool = False

    def __init__(
        self,
        *,
        sessions: Sessions,
        gmail: GmailClient,
        secret_box: SecretBox,
        clock: Clock | None = None,
        enabled: bool = True,
        loop_seconds: float = 1.0,
        batch_size: int = 50,
        concurrency: int = 8,
        lease_seconds: float = 60.0,
        backoff: BackoffPolicy | None = None,
    ) -> None:
        super().__init__(enabled=enabled, loop_seconds=loop_seconds)
        self.sessions = sessions
        self.gmail = gmail
        self.secret_box = secret_box
        self.clock = clock or SystemClock()
        self.batch_size = batch_size
        self.lease = timedelta(seconds=lease_seconds)
        self.backoff = backoff or self.default_backoff
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._outcome_counters: dict[str, Counter] = {}
        # Started by tick(), not finished yet, each with its claim's tenant (`tenant_of`):
        # the next claim's turns start after them.
        self._running: dict[asyncio.Task, uuid.UUID | None] = {}

    async def claim(self, now: datetime, limit: int) -> Sequence[Claim]:
        """Claim up to `limit` due mailboxes: a store verb, ONE statement in autocommit."""
        raise NotImplementedError

    async def process(self, claim: Claim) -> str:
        """Do the claimed work and record its outcome; the outcome's metric label."""
        raise NotImplementedError

    def to_process(self, claims: Sequence[Claim]) -> Sequence[Claim]:
        """The claims that need a Gmail call of their own (all of them, unless a subclass merges some)."""
        return claims

    async def tick(self) -> bool:
        """Pipelined: fill the free slots with claims and start them without waiting for
        them. Otherwise one round. True when the claim was full (more may be due)."""
        if not self.pipelined:
            return await self.run_once() >= self.batch_size
        if len(self._running) >= self.concurrency:
            await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
        free = min(self.batch_size, self.concurrency - len(self._running))
        claims = await self._claim(free)
        for claim in self.to_process(claims):
            task = asyncio.create_task(self._guarded(claim))
            self._running[task] = self.tenant_of(claim)
            task.add_done_callback(self._ended)
        return len(claims) >= free

    def _ended(self, task: asyncio.Task) -> None:
        """A claim `tick` started is done. `process` records its own failures; what escapes
        it (the database gone while recording the outcome) is logged here, as the loop logs
        a failed tick, rather than as an exception never retrieved: the claim's lease
        lapses and the mailbox is claimed again."""
        self._running.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log_failure(f"{type(self).__name__} claim", task.exception())

    def tenant_of(self, claim: Claim) -> uuid.UUID | None:
        """The tenant a claim works for, for `running_tenants` (None: not counted)."""
        return None

    def running_tenants(self) -> list[uuid.UUID]:
        """Each tenant once per claim of it `tick` started and not finished: a claim into
        free slots passes it on so that tenants' turns carry over between claims
        (store/claims.py `due_in_tenant_turns`)."""
        return [tenant for tenant in self._running.values() if tenant is not None]

    async def run(self) -> None:
        """The loop; once stopped, the claims it started finish (their outcomes are written)."""
        try:
            await super().run()
        finally:
            while self._running:
                await asyncio.gather(*self._running, return_exceptions=True)

    async def run_once(self) -> int:
        """Claim one batch and process all of it; returns how many were claimed."""
        claims = await self._claim(self.batch_size)
        if claims:
            processed = self.to_process(claims)
            # All of them, also those `to_process` left out (renewed through another): they
            # must not lapse to another replica while the one standing for them still runs.
            async with self.holding(claims):
                # Every claim of the round ends before its holding does: one raising must not
                # end the heartbeat (and the fences) of the others while they still run.
                results = await asyncio.gather(*(self._guarded(claim) for claim in processed),
                                               return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        return len(claims)

    def holding(self, claims: Sequence[Claim]) -> contextlib.AbstractAsyncContextManager:
        """Around a round's processing (`run_once`): what keeps its claims while they wait for
        a slot and run (a subclass's round heartbeat); nothing by default."""
        return contextlib.nullcontext()

    async def _claim(self, limit: int) -> Sequence[Claim]:
        return await self.claim(self.clock.now(), limit)

    def leased(self, extend: Callable[[], Awaitable[bool]], *, what: str) -> "_Leased":
        """While the block (`async with worker.leased(extend, what=…):`) runs, extend its claim
        (`extend()`: False once the claim is no longer this worker's) every third of the lease,
        so long work is not taken over.

        The heartbeat task starts only when the work outlasts a third of the lease:
        most syncs end long before, and cost a timer instead of two tasks."""
        return _Leased(self, extend, what)

    def _beat_seconds(self) -> float:
        return self.lease.total_seconds() / 3

    async def _keep_lease(self, extend: Callable[[], Awaitable[bool]], done: asyncio.Event, what: str) -> None:
        """Extend the claim now and every third of the lease until `done`; fenced on the
        owner: once the claim is released or lost, extending does nothing and the beat stops."""
        while not done.is_set():
            try:
                kept = await extend()
            except Exception:  # noqa: BLE001 - a missed beat only shortens the margin
                log.warning("could not extend the lease on %s", what, exc_info=True)
                kept = True  # as far as we know: try again at the next beat
            if not kept:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self._beat_seconds())

    async def _guarded(self, claim: Claim) -> None:
        async with self._slots:
            started = time.perf_counter()
            try:
                outcome = await self.process(claim)
            finally:
                self.seconds.observe(time.perf_counter() - started)
            self._outcome_counter(outcome).inc()

    def _outcome_counter(self, outcome: str) -> Counter:
        """`outcomes`' series for `outcome`, looked up once: `labels()` takes the metric's lock
        and builds its key on every call (several times the cost of the `inc`), and every
        claim counts one outcome. Outcomes are a bounded set of labels."""
        counter = self._outcome_counters.get(outcome)
        if counter is None:
            counter = self._outcome_counters[outcome] = self.outcomes.labels(outcome=outcome)
        return counter


class _Leased:
    """`ClaimingWorker.leased`: a timer that starts the heartbeat (`_keep_lease`) if the block
    outlasts a third of the lease. A plain class, as every sync takes one: as an
    asynccontextmanager it also built a generator, a context-manager object and an Event
    per sync, most of its cost."""

    __slots__ = ("_worker", "_extend", "_what", "_first_beat", "_done", "_heartbeat")

    def __init__(self, worker: ClaimingWorker, extend: Callable[[], Awaitable[bool]], what: str) -> None:
        self._worker, self._extend, self._what = worker, extend, what
        self._done: asyncio.Event | None = None
        self._heartbeat: asyncio.Task | None = None

    async def __aenter__(self) -> None:
        self._first_beat = asyncio.get_running_loop().call_later(self._worker._beat_seconds(), self._beat)

    def _beat(self) -> None:
        self._done = asyncio.Event()
        self._heartbeat = asyncio.create_task(self._worker._keep_lease(self._extend, self._done, self._what))

    async def __aexit__(self, *exc_info) -> None:
        self._first_beat.cancel()
        if self._heartbeat is not None:
            # Told to stop, not cancelled: a cancel landing mid-statement would leave
            # its pooled connection to the garbage collector, still open.
            self._done.set()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
