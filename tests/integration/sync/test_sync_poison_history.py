"""Poison history: a history page that keeps failing is worked through record by record,
and only the record that still fails is skipped, with a HISTORY_SKIPPED event naming its
messages; everything before and after it arrives exactly once.

Poison handling is the safety net for bugs we do not know of yet, so the poison here is
injected, narrowly: the `poisoned` fixture wraps the sync worker's per-record processing
(`mailwatch.sync.mailbox.events_from_history`, the name the sync calls) so that it
raises for any history record naming one of the poisoned message ids, as an unknown bug
in our processing of that message would: every time, and for nothing else. Everything
else (Gmail over HTTP, Postgres, the store's failure count) is real.

(The poison these tests once used, a Subject header carrying NUL on a metadata mailbox,
was a real bug of that kind; it is fixed, Gmail's text being made storable, and
tests/integration/sync/test_sync_message_metadata.py shows such a message delivered.)

A worker lost on a page needs no injected bug: a slow Gmail call and a cancelled task.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy import text

from mailwatch.config import SyncSettings
from mailwatch.sync import mailbox as sync
from mailwatch.sync.mailbox import POISON_AFTER
from mailwatch.v1 import resources_pb2
from mailwatch.workers.sync import SyncWorker
from tests.fixtures.pipeline import claims_one, collect, get_mailbox, register_sa_mailbox
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration

ADDED = resources_pb2.EVENT_TYPE_MESSAGE_ADDED
SKIPPED = resources_pb2.EVENT_TYPE_HISTORY_SKIPPED


class UnknownBug(Exception):
    """Stands for a bug in our processing of one message that we do not know of."""


@pytest.fixture
def poisoned(monkeypatch) -> set[str]:
    """Message ids whose history records the sync's processing raises on (add to poison,
    discard to stand for the bug being fixed)."""
    ids: set[str] = set()
    real = sync.events_from_history

    def events_from_history(records, **kwargs):
        records = list(records)
        for record in records:
            if named := ids.intersection(record.message_ids):
                raise UnknownBug(f"history record {record.id} names {sorted(named)}")
        return real(records, **kwargs)

    monkeypatch.setattr(sync, "events_from_history", events_from_history)
    return ids


async def registered(service, email: str):
    auth, mailbox = await register_sa_mailbox(
        service, email, metadata=resources_pb2.MetadataOptions(enabled=True, headers=["Subject"])
    )
    service.sim.advance_clock(2)  # past Gmail's one-notification-per-second window of the watch
    return auth, mailbox


async def due_now(service) -> None:
    """Make the mailbox due now and do not wait out a failure's backoff."""
    async with service.app.sessions() as session, session.begin():
        await session.execute(text("UPDATE mailboxes SET sync_due_at = now(), backoff_until = NULL"))


async def attempt(service) -> None:
    """One sync attempt now."""
    await due_now(service)
    await claims_one(service.app.sync_worker)


async def skip_events_written(service) -> int:
    async with service.app.sessions() as session:
        return (await session.execute(
            text("SELECT count(*) FROM change_events WHERE event_type = 'HISTORY_SKIPPED'"))).scalar_one()


async def page_failures(service) -> int:
    async with service.app.sessions() as session:
        return (await session.execute(text("SELECT page_failures FROM mailboxes"))).scalar_one()


async def fails_at(service, auth, mailbox_id, history_id: int) -> None:
    """The attempt failed with our own error and committed nothing."""
    current = await get_mailbox(service, auth, mailbox_id)
    assert current.history_id == history_id
    assert current.last_error.reason == "INTERNAL"
    assert await skip_events_written(service) == 0


async def delivered(service, auth, last_id: str) -> list:
    return await collect(service, auth, lambda ev: last_id in {e.message_id for e in ev if e.type == ADDED})


def added_ids(events) -> list[str]:
    return [e.message_id for e in events if e.type == ADDED]


async def test_a_page_that_raises_every_time_is_skipped_after_n_attempts_naming_its_message(make_service, poisoned):
    email = "poison@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        auth, mailbox = await registered(service, email)
        before = sim.insert_message(email, label_ids=["INBOX"], subject="Before")
        await attempt(service)
        poison = sim.insert_message(email, label_ids=["INBOX"], subject="Poison")
        poisoned.add(poison["id"])
        same_page = sim.insert_message(email, label_ids=["INBOX"], subject="Same page")
        stuck_at = (await get_mailbox(service, auth, mailbox.id)).history_id
        assert stuck_at == before["historyId"]

        for _ in range(POISON_AFTER):
            await attempt(service)
            await fails_at(service, auth, mailbox.id, stuck_at)
        await attempt(service)  # the page is worked through record by record: the poison is skipped
        later = sim.insert_message(email, label_ids=["INBOX"], subject="Later")
        await attempt(service)

        events = await delivered(service, auth, later["id"])
        assert added_ids(events) == [before["id"], same_page["id"], later["id"]]
        [skip] = [e for e in events if e.type == SKIPPED]
        assert skip.attributes["message_ids"] == poison["id"]
        assert skip.attributes["reason"] == "PROCESSING_FAILED"
        assert skip.attributes["error"].startswith("UnknownBug: history record")
        assert skip.attributes["attempts"] == str(POISON_AFTER)
        assert skip.history_id == poison["historyId"]
        subjects = {e.message_id: {h.name: h.value for h in e.metadata.headers} for e in events if e.type == ADDED}
        assert subjects[same_page["id"]] == {"Subject": "Same page"}
        current = await get_mailbox(service, auth, mailbox.id)
        assert current.history_id >= later["historyId"] and not current.HasField("last_error")
        assert await page_failures(service) == 0


async def test_transient_gmail_errors_do_not_count_towards_a_skip(make_service, poisoned):
    email = "transient@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        auth, mailbox = await registered(service, email)
        stuck_at = mailbox.history_id
        poison = sim.insert_message(email, label_ids=["INBOX"], subject="Poison")
        poisoned.add(poison["id"])
        for _ in range(POISON_AFTER - 1):
            await attempt(service)
            await fails_at(service, auth, mailbox.id, stuck_at)

        # Many more failures, all Gmail's own (500, and the 429 without a lockout): not the page's fault.
        sim.inject_fault("backendError", method="users.history.list", user=email, count=6)
        sim.inject_fault("concurrentRequests", method="users.history.list", user=email, count=6)
        for expected in ["GMAIL_UNAVAILABLE"] * 6 + ["GMAIL_RATE_LIMITED"] * 6:
            await attempt(service)
            current = await get_mailbox(service, auth, mailbox.id)
            assert (current.history_id, current.last_error.reason) == (stuck_at, expected)
        assert await skip_events_written(service) == 0
        assert await page_failures(service) == POISON_AFTER - 1

        await attempt(service)  # the N-th failure of the page itself
        await fails_at(service, auth, mailbox.id, stuck_at)
        await attempt(service)
        after = sim.insert_message(email, label_ids=["INBOX"], subject="After")
        await attempt(service)
        events = await delivered(service, auth, after["id"])
        assert added_ids(events) == [after["id"]]
        assert [e.attributes["message_ids"] for e in events if e.type == SKIPPED] == [poison["id"]]


async def test_a_successful_sync_resets_the_count(make_service, poisoned):
    email = "resets@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        auth, mailbox = await registered(service, email)
        first = sim.insert_message(email, label_ids=["INBOX"], subject="First")
        poisoned.add(first["id"])
        for _ in range(POISON_AFTER - 1):
            await attempt(service)
            await fails_at(service, auth, mailbox.id, mailbox.history_id)
        # The bug is gone before the next try (say, a fix deployed): the page commits.
        poisoned.discard(first["id"])
        await attempt(service)
        synced = (await get_mailbox(service, auth, mailbox.id)).history_id
        assert synced > mailbox.history_id
        assert await page_failures(service) == 0

        second = sim.insert_message(email, label_ids=["INBOX"], subject="Second")
        poisoned.add(second["id"])
        for _ in range(POISON_AFTER):  # a full N again: the earlier failures no longer count
            await attempt(service)
            await fails_at(service, auth, mailbox.id, synced)
        await attempt(service)
        after = sim.insert_message(email, label_ids=["INBOX"], subject="After")
        await attempt(service)
        events = await delivered(service, auth, after["id"])
        assert added_ids(events) == [first["id"], after["id"]]
        assert [e.attributes["message_ids"] for e in events if e.type == SKIPPED] == [second["id"]]


# --- a worker lost on the page -----------------------------------------------------------------

DOOMED_LEASE_SECONDS = 1.0
SLOW_LOOKUP = 8.0  # seconds: a label lookup the doomed worker never sees the end of


def lookups(sim, email: str) -> int:
    return sim.counters()["calls"].get(email, {}).get("users.messages.get", 0)


async def lost_on_the_page(service, email: str, n: int) -> None:
    """A sync worker claims the mailbox, reaches the page's message lookup and is lost there
    (its task cancelled, as a killed process would stop): the lease is never released."""
    worker = SyncWorker(settings=SyncSettings(lease_seconds=DOOMED_LEASE_SECONDS), sessions=service.app.sessions,
                        gmail=service.app.gmail, secret_box=service.app.secret_box, owner=f"doomed-{n}")
    before = lookups(service.sim, email)
    await due_now(service)

    async def claimed_and_lost() -> bool:
        run = asyncio.create_task(worker.run_once())
        await eventually(lambda: run.done() or lookups(service.sim, email) > before, timeout=60)
        if run.done():
            assert run.result() == 0  # the last lost worker's lease has not lapsed yet: claim again
            return False
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        return True

    await eventually(claimed_and_lost, timeout=60, interval=0.1, what="the mailbox claimed")


async def test_a_page_whose_worker_is_lost_n_times_is_skipped(make_service):
    email = "lost@example.com"
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        auth, mailbox = await registered(service, email)  # metadata: a messages.get per added message
        before = sim.insert_message(email, label_ids=["INBOX"], subject="Before")
        await attempt(service)
        doomed = sim.insert_message(email, label_ids=["INBOX"], subject="Doomed")
        stuck_at = before["historyId"]
        sim.add_latency("users.messages.get", SLOW_LOOKUP, user=email)

        # N workers lost on the page, then one more lost on its record while the page is
        # worked through record by record.
        for n in range(POISON_AFTER + 1):
            await lost_on_the_page(service, email, n)
            current = await get_mailbox(service, auth, mailbox.id)
            assert current.history_id == stuck_at
        assert await skip_events_written(service) == 0
        sim.clear_latency()
        await attempt(service)  # the lease lapses; the record the worker was lost on is skipped
        after = sim.insert_message(email, label_ids=["INBOX"], subject="After")
        await attempt(service)

        events = await delivered(service, auth, after["id"])
        assert added_ids(events) == [before["id"], after["id"]]
        [skip] = [e for e in events if e.type == SKIPPED]
        assert skip.attributes["message_ids"] == doomed["id"]
        assert skip.attributes["reason"] == "WORKER_LOST"
        assert skip.attributes["attempts"] == str(POISON_AFTER + 1)
        assert await page_failures(service) == 0
