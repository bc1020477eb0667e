"""Ingest keeps malformed notifications bounded: a redelivery is stored once and counted as dropped."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from mailwatch.ingest.record import Received, record_batch
from mailwatch.store.models import malformed_notifications

pytestmark = pytest.mark.integration


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("mailwatch_malformed_notifications_dropped_total", {"reason": reason}) or 0.0


async def test_a_redelivered_malformed_message_is_stored_once_and_counted(sessions):
    garbage = Received(message_id="4242", data=b"not json")
    before = dropped("duplicate")
    first = await record_batch(sessions, [garbage], source="projects/p/subscriptions/s", source_label="pull")
    # Pub/Sub redelivers (ack lost, deadline passed): same message id, twice in one batch too.
    again = await record_batch(sessions, [garbage, garbage], source="projects/p/subscriptions/s", source_label="pull")
    assert first.malformed == 1 and again.malformed == 2
    assert again.malformed_duplicates == 2
    assert dropped("duplicate") == before + 2
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(malformed_notifications)) == 1
