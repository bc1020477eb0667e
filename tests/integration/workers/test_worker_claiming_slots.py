"""The claiming loop's scheduling: a pipelined worker (sync) fills free slots as
they free up; it does not wait for a round's slowest claim before claiming more.

The claims here come from a list rather than from `mailboxes` (what is claimed
does not matter, only when), inside the worker's real transaction on Postgres;
except in the last test, where the sync worker's real claim picks among tenants.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from mailwatch.config import GmailSettings, SyncSettings
from mailwatch.gmail.client import GmailClient
from mailwatch.workers.claiming import ClaimingWorker
from mailwatch.workers.sync import SyncWorker
from tests.fixtures.factory import Rows
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



async def test_a_claim_whose_processing_raises_is_logged_and_its_slot_freed(sessions, caplog):
    """`process` records a mailbox's failures itself; what escapes it (the database gone while
    recording the outcome) is logged by the worker, not left as a task exception nobody
    retrieves, and the slot is free for the next claim."""

    class Failing(Listed):
        async def process(self, claim: str) -> str:
            self.started.append(claim)
            if claim == "doomed":
                raise RuntimeError("the outcome could not be recorded")
            return "synced"

    worker = Failing(sessions, pipelined=True, concurrency=1)
    task = await _run(worker)
    try:
        worker.make_due("doomed")
        await eventually(lambda: "Failing claim failed" in caplog.text)
        failed = [record for record in caplog.records if record.getMessage() == "Failing claim failed"]
        assert failed[0].exc_info[1].args == ("the outcome could not be recorded",)
        worker.make_due("next")
        await eventually(lambda: worker.started == ["doomed", "next"])
    finally:
        await _stop(worker, task)


class HeldSyncs(SyncWorker):
    """The sync worker with its real claim (Postgres, tenants taking turns); a claimed
    mailbox's sync holds its slot until the test releases it (no Gmail call)."""

    def __init__(self, sessions, gmail: GmailClient, *, concurrency: int) -> None:
        super().__init__(sessions=sessions, gmail=gmail, secret_box=None, loop_seconds=60.0,
                         settings=SyncSettings(concurrency=concurrency))
        self.started: list[str] = []
        self.release: dict[str, asyncio.Event] = {}
        self.released_all = False  # stopping: every sync, started or not, ends at once

    async def process(self, claim) -> str:
        address = claim.mailbox.email_address
        self.started.append(address)
        if not self.released_all:
            await self.release.setdefault(address, asyncio.Event()).wait()
        return "synced"


async def test_a_busy_worker_gives_its_next_free_slot_to_the_tenant_it_runs_nothing_for(sessions):
    """Both slots run the flood's syncs and more of the flood's mailboxes have been due for
    longer: when one slot frees up, the steady tenant's newly due mailbox takes it."""
    rows = Rows(sessions)
    await rows.flood_and_steady("slots.test", 6)
    async with sessions() as session, session.begin():
        await session.execute(text(
            "UPDATE mailboxes SET sync_due_at = CASE WHEN email_address LIKE 'steady%' THEN NULL "
            "ELSE now() - make_interval(secs => 60 - substring(email_address FROM 'flood([0-9])')::int) END "
            "WHERE email_address LIKE '%@slots.test'"))
    gmail = GmailClient(GmailSettings())
    worker = HeldSyncs(sessions, gmail, concurrency=2)
    task = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: sorted(worker.started) == ["flood0@slots.test", "flood1@slots.test"],
                         what=f"the flood's two earliest in the two slots (started: {worker.started})")
        async with sessions() as session, session.begin():
            await session.execute(text("UPDATE mailboxes SET sync_due_at = now() WHERE email_address = :steady"),
                                  {"steady": "steady@slots.test"})
        worker.release.setdefault("flood0@slots.test", asyncio.Event()).set()
        await eventually(lambda: len(worker.started) == 3)
        assert worker.started[2] == "steady@slots.test"
    finally:
        worker.released_all = True
        for event in worker.release.values():
            event.set()
        worker.stop()
        await asyncio.wait_for(task, 30)
        gmail.close()
