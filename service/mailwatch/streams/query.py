"""What a change stream asks for: filters, start position, batch size, heartbeat interval.

The API layer builds a `StreamQuery` from a validated request (decoding the
cursor into `after_sequence`); the streams layer never sees protobuf or
cursor bytes.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from mailwatch.domain.models import EventType
from mailwatch.domain.stream_partitions import StreamPartition


class StartKind(enum.Enum):
    NOW = "NOW"  # after the tenant's latest sequence when the stream opens
    EARLIEST = "EARLIEST"  # after the tenant's pruned watermark: everything still retained
    CURSOR = "CURSOR"  # after `StreamQuery.after_sequence`


@dataclass(frozen=True)
class StreamQuery:
    mailbox_ids: tuple[uuid.UUID, ...]  # empty: all of the tenant's; deduplicated, request order
    event_types: tuple[EventType, ...]  # empty: all
    start: StartKind
    after_sequence: int | None  # with StartKind.CURSOR: deliver events with sequence > this
    max_batch_size: int
    heartbeat_seconds: float
    partition: StreamPartition | None = None  # None: every mailbox

    @property
    def filtered(self) -> bool:
        return bool(self.mailbox_ids or self.event_types or self.partition)
