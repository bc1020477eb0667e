"""StreamItem -> StreamChangesResponse (one gRPC message per batch or heartbeat)."""

from __future__ import annotations

from mailwatch.api.convert import events_response, heartbeat_response
from mailwatch.streams.changes import EventBatch, Heartbeat, StreamItem
from mailwatch.v1 import mailbox_service_pb2


def to_response(item: StreamItem) -> mailbox_service_pb2.StreamChangesResponse:
    if isinstance(item, EventBatch):
        return events_response(list(item.events))
    if isinstance(item, Heartbeat):
        return heartbeat_response(item.server_time, item.position)
    raise TypeError(f"not a stream item: {type(item).__name__}")
