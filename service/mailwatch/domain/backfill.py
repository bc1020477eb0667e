"""A registration's backfill: which existing messages to deliver, and how far it is."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime

#: The most messages one backfill lists and delivers (the newest): the listed ids are
#: kept in Postgres until the backfill completes.
MAX_BACKFILL_MESSAGES = 100_000


@dataclass(frozen=True)
class BackfillRequest:
    """Messages received since `since` and/or the `newest` ones, carrying every one of `label_ids`."""

    since: datetime | None = None
    newest: int | None = None
    label_ids: tuple[str, ...] = ()

    @property
    def limit(self) -> int:
        return min(self.newest or MAX_BACKFILL_MESSAGES, MAX_BACKFILL_MESSAGES)

    def query(self) -> str:
        """Gmail's search for `since`: `after:` with epoch seconds (received at or after that second)."""
        return f"after:{math.floor(self.since.timestamp())}" if self.since is not None else ""


class BackfillState(enum.StrEnum):
    LISTING = "LISTING"  # messages.list not done yet
    DELIVERING = "DELIVERING"  # the listed ids are stored; events appended oldest first
    COMPLETED = "COMPLETED"  # BACKFILL_COMPLETED appended
    FAILED = "FAILED"  # Gmail refused the request for good; BACKFILL_COMPLETED (with the error) appended


@dataclass(frozen=True)
class BackfillProgress:
    state: BackfillState
    listed: int
    delivered: int
    skipped: int
    created: datetime
    completed_at: datetime | None = None
    last_error: str | None = None
    last_error_reason: str | None = None
    last_error_at: datetime | None = None
