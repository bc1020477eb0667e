"""Stream partitions: a tenant's mailboxes split into `count` shares by a stable hash,
so that `count` consumer replicas can each stream one share (StreamChanges' `partition`).

A mailbox is in partition `h mod count`, `h` being the first 32 bits (unsigned)
of the MD5 of its id's canonical text: stable across processes, releases and
languages (a client can compute it), and even however ids are generated. An
event of no mailbox (a tenant-wide TEST event) is in partition 0. The change
log's scan computes the same in SQL (store/changes.py); a test holds them equal.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

MAX_PARTITIONS = 1024


@dataclass(frozen=True)
class StreamPartition:
    index: int  # 0 <= index < count
    count: int  # 2 <= count <= MAX_PARTITIONS (one partition is no partition)

    def __post_init__(self) -> None:
        if not 2 <= self.count <= MAX_PARTITIONS or not 0 <= self.index < self.count:
            raise ValueError(f"bad stream partition {self.index} of {self.count}")

    def holds(self, mailbox_id: uuid.UUID | None) -> bool:
        return partition_of(mailbox_id, self.count) == self.index


def partition_of(mailbox_id: uuid.UUID | None, count: int) -> int:
    """The partition (of `count`) holding `mailbox_id`'s events."""
    if mailbox_id is None:
        return 0
    return int(hashlib.md5(str(mailbox_id).encode("ascii")).hexdigest()[:8], 16) % count
