"""Pure parts of the streams package: start positions, URLs, responses, the notifier's wake-ups."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from mailwatch.domain.errors import CursorExpired, InvalidCursor
from mailwatch.streams import ChangeNotifier, StartKind, StreamQuery, StreamStats, resolve_start
from tests.fixtures.waiting import eventually


def _query(start, after=None):
    return StreamQuery(mailbox_ids=(), event_types=(), start=start, after_sequence=after,
                       max_batch_size=10, heartbeat_seconds=5)


@pytest.mark.parametrize(
    ("start", "after", "expected"),
    [
        (StartKind.NOW, None, 90),
        (StartKind.EARLIEST, None, 40),
        (StartKind.CURSOR, 40, 40),  # at the watermark: everything after it is retained
        (StartKind.CURSOR, 55, 55),
        (StartKind.CURSOR, 90, 90),  # at the latest: wait for what comes next
    ],
)
def test_resolve_start(start, after, expected):
    assert resolve_start(_query(start, after), latest=90, pruned_through=40) == expected


def test_a_cursor_below_the_watermark_has_expired_and_says_where_to_resume():
    with pytest.raises(CursorExpired) as raised:
        resolve_start(_query(StartKind.CURSOR, 39), latest=90, pruned_through=40)
    assert raised.value.reason == "CURSOR_EXPIRED"
    assert raised.value.pruned_through_sequence == 40  # the API turns it into earliest_cursor
    assert raised.value.metadata == {"pruned_through_sequence": "40"}


def test_a_cursor_beyond_the_tenants_log_is_invalid():
    with pytest.raises(InvalidCursor):
        resolve_start(_query(StartKind.CURSOR, 91), latest=90, pruned_through=40)


def test_a_new_tenant_starts_at_zero_everywhere():
    for start, after in ((StartKind.NOW, None), (StartKind.EARLIEST, None), (StartKind.CURSOR, 0)):
        assert resolve_start(_query(start, after), latest=0, pruned_through=0) == 0


def test_stream_stats_track_read_ahead():
    stats = StreamStats()
    stats.record_read(10)
    stats.events_yielded = 10
    stats.record_read(4)
    assert (stats.reads, stats.events_read, stats.max_read_ahead) == (2, 14, 10)


# --- the notifier's wake-ups, without a database ----------------------------------


async def test_a_tenant_wakeup_wakes_all_its_waiters_and_no_others():
    notifier = ChangeNotifier("postgresql://nowhere/db")
    a, b = uuid.uuid4(), uuid.uuid4()
    waiters = [asyncio.ensure_future(notifier.wait(a, 5)) for _ in range(3)]
    other = asyncio.ensure_future(notifier.wait(b, 0.2))
    await eventually(lambda: {a, b} <= notifier._waiters.keys())  # all four are waiting
    notifier.notify_local(a)
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert await other is False


async def test_a_wait_that_times_out_or_is_cancelled_leaves_nothing_behind():
    notifier = ChangeNotifier("postgresql://nowhere/db")
    a = uuid.uuid4()
    assert await notifier.wait(a, 0.01) is False
    cancelled = asyncio.ensure_future(notifier.wait(a, 30))
    await eventually(lambda: a in notifier._waiters)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert notifier._waiters == {}


async def test_a_token_taken_before_a_wakeup_returns_at_once():
    notifier = ChangeNotifier("postgresql://nowhere/db")
    a = uuid.uuid4()
    token = notifier.token(a)
    assert await notifier.wait(a, 0.01, token=token) is False  # nothing happened
    notifier.notify_local(a)
    assert await notifier.wait(a, 5, token=token) is True
    assert await notifier.wait(a, 0.01, token=notifier.token(a)) is False


async def test_payloads_that_are_not_tenant_ids_are_ignored():
    notifier = ChangeNotifier("postgresql://nowhere/db")
    a = uuid.uuid4()
    token = notifier.token(a)
    notifier._on_notify("not-a-uuid")
    assert notifier.token(a) == token
    notifier._on_notify(str(a))
    assert notifier.token(a) != token


async def test_stop_wakes_every_waiter_and_an_unreachable_database_is_retried_quietly():
    notifier = ChangeNotifier("postgresql://127.0.0.1:1/nowhere", reconnect_min_seconds=0.01,
                              reconnect_max_seconds=0.05, connect_timeout_seconds=1)
    await notifier.start(wait_connected=0.2)
    assert not notifier.connected
    tenant = uuid.uuid4()
    waiter = asyncio.ensure_future(notifier.wait(tenant, 30))
    await eventually(lambda: tenant in notifier._waiters and notifier._failures >= 2)  # waiting; retried
    await notifier.stop()
    assert await asyncio.wait_for(waiter, 1) is True
