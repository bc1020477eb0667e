"""The shape of a worker that claims due mailboxes and calls Gmail for each.

Sync and renew share it: every round claims one batch in a short transaction
(`claim`), then processes the claims concurrently, at most `concurrency` at a
time (`process`, which returns a bounded outcome label and never raises: a
mailbox's failure is recorded on that mailbox). Each is timed and counted in
the subclass's own metrics. A full batch means more may be due: the loop
ticks again at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailwatch.clock import Clock, SystemClock
from mailwatch.gmail.client import GmailClient
from mailwatch.secrets import SecretBox
from mailwatch.sync.backoff import BackoffPolicy
from mailwatch.workers.loop import LoopWorker

Claim = TypeVar("Claim")


class ClaimingWorker(LoopWorker, Generic[Claim]):
    #: Set by each subclass: outcomes by label, and the time to process one claim.
    outcomes: Counter
    seconds: Histogram
    #: Retry pacing when the constructor is given none.
    default_backoff: BackoffPolicy = BackoffPolicy()

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
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
        self._slots = asyncio.Semaphore(concurrency)

    async def claim(self, session: AsyncSession, now: datetime) -> Sequence[Claim]:
        """Claim up to `batch_size` due mailboxes (one statement, in the caller's transaction)."""
        raise NotImplementedError

    async def process(self, claim: Claim) -> str:
        """Do the claimed work and record its outcome; the outcome's metric label."""
        raise NotImplementedError

    def to_process(self, claims: Sequence[Claim]) -> Sequence[Claim]:
        """The claims that need a Gmail call of their own (all of them, unless a subclass merges some)."""
        return claims

    async def tick(self) -> bool:
        return await self.run_once() >= self.batch_size

    async def run_once(self) -> int:
        """Claim one batch and process it concurrently; returns how many were claimed."""
        async with self.sessions() as session, session.begin():
            claims = await self.claim(session, self.clock.now())
        if claims:
            await asyncio.gather(*(self._guarded(claim) for claim in self.to_process(claims)))
        return len(claims)

    async def _guarded(self, claim: Claim) -> None:
        async with self._slots:
            with self.seconds.time():
                outcome = await self.process(claim)
            self.outcomes.labels(outcome=outcome).inc()
