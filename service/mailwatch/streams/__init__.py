"""Change-log fan-out: LISTEN/NOTIFY wake-ups and per-tenant change streams.

    notifier = ChangeNotifier(database_url)          # one per process
    await notifier.start()
    streamer = ChangeStreamer(sessions, notifier, clock=clock, poll_seconds=5.0)
    async for item in streamer.stream(tenant_id, query):   # EventBatch | Heartbeat
        yield to_response(item)
    await notifier.stop()
"""

from mailwatch.streams.changes import (
    ChangeStreamer,
    EventBatch,
    Heartbeat,
    StreamItem,
    StreamStats,
    resolve_start,
)
from mailwatch.streams.notifier import ChangeNotifier, libpq_url
from mailwatch.streams.responses import to_response

__all__ = [
    "ChangeNotifier",
    "ChangeStreamer",
    "EventBatch",
    "Heartbeat",
    "StreamItem",
    "StreamStats",
    "libpq_url",
    "resolve_start",
    "to_response",
]
