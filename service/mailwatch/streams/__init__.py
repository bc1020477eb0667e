"""Change-log fan-out: LISTEN/NOTIFY wake-ups and per-tenant change streams.

    notifier = ChangeNotifier(database_url)          # one per process
    await notifier.start()
    streamer = ChangeStreamer(sessions, notifier, clock=clock, poll_seconds=5.0)
    async for item in streamer.stream(tenant_id, query):   # Heartbeat (start position), then EventBatch | Heartbeat
        ...                                                  # the API turns items into responses
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
from mailwatch.streams.notifier import ChangeNotifier
from mailwatch.streams.query import StartKind, StreamQuery

__all__ = [
    "ChangeNotifier",
    "ChangeStreamer",
    "EventBatch",
    "Heartbeat",
    "StreamItem",
    "StartKind",
    "StreamQuery",
    "StreamStats",
    "resolve_start",
]
