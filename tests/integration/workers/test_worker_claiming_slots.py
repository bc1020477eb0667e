"""The claiming loop's scheduling: a pipelined worker (sync) fills free slots as
they free up; it does not wait for a round's slowest claim before claiming more.

The claims here come from a list rather than from `mailboxes` (what is claimed
does not matter, only when), inside the worker's real transaction on Postgres.
"""

from __future__ import annotations

import asyncio

import pytest

from mailwatch.workers.claiming import ClaimingWorker
from mailwatch.workers.sync import SyncWorker
from tests.fixtures.pipeline import eventually

pytestmark = pytest.mark.integration


class Listed(ClaimingWorker[str]):
    """Claims names from `due`; processing a name waits until the test releases it."""

    outcomes = SyncWorker.outcomes
    seconds = SyncWorker.seconds

    def __init__(self, sessions, *, pipelined: bool, concurrency: int) -> None:
        super().__init__(sessions=sessions, gmail=None, secret_box=None, loop_seconds=60.0,
                         batch_size=50, concurrency=concurrency)
        self.pipelined = pipelined
        self.due: list[str] = []
        self.limits: list[int] = []
        self.started: list[str] = []
        self.finished: list[str] = []
        self.release: dict[str, asyncio.Event] = {}

    async def claim(self, now, limit: int) -> list[str]:
        self.limits.append(limit)
        claimed, self.due = self.due[:limit], self.due[limit:]
        return claimed

    async def process(self, claim: str) -> str:
        self.started.append(claim)
        await self.release.setdefault(claim, asyncio.Event()).wait()
        self.finished.append(claim)
        return "synced"

    def make_due(self, *names: str) -> None:
        self.due.extend(names)
        self.wake()


async def _run(worker: Listed):
    return asyncio.create_task(worker.run())


async def _stop(worker: Listed, task: asyncio.Task) -> None:
    for event in worker.release.values():
        event.set()
    worker.stop()
    await asyncio.wait_for(task, 30)


async def test_a_mailbox_due_during_a_slow_sync_is_claimed_without_waiting_for_it(sessions):
    worker = Listed(sessions, pipelined=True, concurrency=4)
    task = await _run(worker)
    try:
        worker.make_due("slow")
        await eventually(lambda: worker.started == ["slow"])
        worker.make_due("fast")
        await eventually(lambda: "fast" in worker.started)
        worker.release["fast"].set()
        await eventually(lambda: worker.finished == ["fast"])
        assert "slow" not in worker.finished  # still held: the fast one did not wait for it
        # Each claim asked only for the slots that were free.
        assert worker.limits[:2] == [4, 3]
    finally:
        await _stop(worker, task)
    assert sorted(worker.finished) == ["fast", "slow"]  # stopping lets started claims finish


async def test_when_every_slot_is_busy_the_next_claim_waits_for_one_to_free(sessions):
    worker = Listed(sessions, pipelined=True, concurrency=2)
    task = await _run(worker)
    try:
        worker.make_due("a", "b", "c")
        await eventually(lambda: worker.started == ["a", "b"])
        assert worker.due == ["c"]  # not claimed (leased) while no slot can take it
        worker.release["b"].set()
        await eventually(lambda: worker.started == ["a", "b", "c"])
        assert worker.limits[-1] == 1
    finally:
        await _stop(worker, task)

