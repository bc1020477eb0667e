"""Cursor expiry: retention must never make a stream skip events silently."""

from __future__ import annotations

from contextlib import aclosing
from datetime import datetime, timedelta, timezone

import pytest

from mailwatch.streams import StartKind
from mailwatch.domain.errors import CursorExpired
from mailwatch.store import changes

from .conftest import append, collect, next_batch, query

pytestmark = pytest.mark.integration

OLD = datetime(2020, 1, 1, tzinfo=timezone.utc)


async def _prune(sessions, older_than=OLD + timedelta(days=1)):
    async with sessions() as session, session.begin():
        return await changes.prune_events(session, older_than)


async def test_a_cursor_below_the_pruned_watermark_has_expired(streamer, sessions, world):
    old = await append(sessions, world.a1, 3, observed_at=OLD)
    recent = await append(sessions, world.a1, 2)
    assert await _prune(sessions) == 3
    with pytest.raises(CursorExpired) as raised:
        async with aclosing(streamer.stream(world.tenant_a, query(StartKind.CURSOR, old[0].sequence))) as stream:
            await anext(stream)
    earliest = raised.value.pruned_through_sequence
    assert earliest == old[-1].sequence
    assert raised.value.metadata["pruned_through_sequence"] == str(old[-1].sequence)

    # The earliest position (the watermark itself) is good: everything after it is retained.
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.CURSOR, earliest))) as stream:
        assert [e.id for e in await collect(stream, 2)] == [e.id for e in recent]
    # As is START_EARLIEST.
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.EARLIEST))) as stream:
        assert [e.id for e in await collect(stream, 2)] == [e.id for e in recent]


async def test_a_stream_overtaken_by_retention_fails_instead_of_skipping(streamer, sessions, world):
    old = await append(sessions, world.a1, 10, observed_at=OLD)
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.EARLIEST, batch=4))) as stream:
        first = await next_batch(stream)
        assert [e.sequence for e in first.events] == [e.sequence for e in old[:4]]
        assert await _prune(sessions) == 10  # while the consumer holds the first batch
        with pytest.raises(CursorExpired) as raised:
            await next_batch(stream)
    assert raised.value.pruned_through_sequence == old[-1].sequence


async def test_prune_of_another_tenant_does_not_disturb_a_stream(streamer, sessions, world):
    await append(sessions, world.b1, 5, observed_at=OLD)
    mine = await append(sessions, world.a1, 3)
    async with aclosing(streamer.stream(world.tenant_a, query(StartKind.EARLIEST, batch=2))) as stream:
        first = await next_batch(stream)
        await _prune(sessions)
        rest = await collect(stream, 1)
    assert [e.id for e in list(first.events) + rest] == [e.id for e in mine]
