"""Stream partitions: the documented hash, its bounds and its spread."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from mailwatch.domain.stream_partitions import StreamPartition, partition_of


def test_the_hash_is_the_documented_one():
    mailbox_id = uuid.UUID("6f1c2a7e-0000-4000-8000-000000000001")
    h = int(hashlib.md5(b"6f1c2a7e-0000-4000-8000-000000000001").hexdigest()[:8], 16)
    assert partition_of(mailbox_id, 7) == h % 7
    assert partition_of(None, 7) == 0  # tenant-wide events


def test_ids_spread_over_every_partition_and_each_is_in_exactly_one():
    ids = [uuid.uuid4() for _ in range(4000)]
    shares = [sum(StreamPartition(index, 4).holds(i) for i in ids) for index in range(4)]
    assert sum(shares) == len(ids)
    assert min(shares) > 800  # ~1000 each


@pytest.mark.parametrize(("index", "count"), [(0, 1), (2, 2), (-1, 3), (0, 1025)])
def test_bounds(index, count):
    with pytest.raises(ValueError):
        StreamPartition(index, count)
