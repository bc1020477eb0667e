"""A mailbox's history: Gmail's change log, with bisect lookup and paging.

Each change to a mailbox is one record with a history id larger than every
earlier one (ids have gaps, as Gmail's do). Records live in parallel lists
sorted by id, so finding where a `startHistoryId` or a page token resumes is a
binary search, whatever the mailbox size. Expiring history (by id or by age)
drops records from the front and raises the *floor*: a `startHistoryId` below
the floor is too old and `history.list` answers 404.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass

MESSAGE_ADDED = "messageAdded"
MESSAGE_DELETED = "messageDeleted"
LABEL_ADDED = "labelAdded"
LABEL_REMOVED = "labelRemoved"
HISTORY_TYPES = (MESSAGE_ADDED, MESSAGE_DELETED, LABEL_ADDED, LABEL_REMOVED)


@dataclass(slots=True, frozen=True)
class HistoryRecord:
    id: int
    time: float  # simulated epoch seconds
    kind: str  # one of HISTORY_TYPES
    message_id: str
    thread_id: str
    label_ids: tuple[str, ...]  # the message's labels after the change (at deletion for deletes)
    changed: tuple[str, ...] = ()  # labels added / removed by a label change
    removed: tuple[str, ...] = ()  # labels a labelAdded record also removed (one record for a relabel)

    def kinds(self) -> frozenset[str]:
        return frozenset((self.kind, LABEL_REMOVED)) if self.removed else frozenset((self.kind,))

    def relates_to(self, label_id: str) -> bool:
        return label_id in self.label_ids or label_id in self.changed or label_id in self.removed

    def related_labels(self) -> frozenset[str]:
        return frozenset(self.label_ids) | frozenset(self.changed) | frozenset(self.removed)

    def to_json(self, labels_of=None, types: frozenset[str] | None = None) -> dict:
        """The record as history.list renders it.

        `labels_of(message_id)`: the message's labels now (None once it is gone), given to each
        added / relabelled message as real Gmail does (its labels when the page is served, not
        when the record happened); without it, messages carry only id and threadId, which the
        discovery document allows ("typically only have id and threadId"). `types`: the
        historyTypes asked for (a relabel record shows only the parts asked for)."""
        ref = {"id": self.message_id, "threadId": self.thread_id}
        message = dict(ref)
        if labels_of is not None and self.kind != MESSAGE_DELETED:
            labels = labels_of(self.message_id)
            if labels is not None:
                message["labelIds"] = list(labels)
        out: dict = {"id": str(self.id), "messages": [ref]}
        wanted = self.kinds() if types is None else self.kinds() & types
        if self.kind == MESSAGE_ADDED:
            out["messagesAdded"] = [{"message": message}]
        elif self.kind == MESSAGE_DELETED:
            out["messagesDeleted"] = [{"message": message}]
        else:
            if self.kind == LABEL_ADDED and LABEL_ADDED in wanted:
                out["labelsAdded"] = [{"message": dict(message), "labelIds": list(self.changed)}]
            if self.kind == LABEL_REMOVED or (self.removed and LABEL_REMOVED in wanted):
                removed = self.changed if self.kind == LABEL_REMOVED else self.removed
                out["labelsRemoved"] = [{"message": dict(message), "labelIds": list(removed)}]
        return out


class HistoryExpired(Exception):
    """The requested start (or page position) is older than retained history."""


class HistoryLog:
    def __init__(self, floor: int) -> None:
        self.floor = floor  # the oldest history id still valid as a startHistoryId
        self._ids: list[int] = []
        self._times: list[float] = []
        self._records: list[HistoryRecord] = []

    def __len__(self) -> int:
        return len(self._records)

    def append(self, record: HistoryRecord) -> None:
        if self._ids and record.id <= self._ids[-1]:
            raise ValueError("history ids must increase")
        self._ids.append(record.id)
        self._times.append(record.time)
        self._records.append(record)

    def _drop_front(self, count: int) -> None:
        if count <= 0:
            return
        self.floor = max(self.floor, self._ids[count - 1])
        del self._ids[:count], self._times[:count], self._records[:count]

    def expire_through(self, history_id: int) -> None:
        """Forget every record with id <= history_id; starts below it become invalid."""
        self._drop_front(bisect_right(self._ids, history_id))
        self.floor = max(self.floor, history_id)

    def expire_older_than(self, cutoff_time: float) -> None:
        """Forget records made before `cutoff_time` (Gmail keeps about a week)."""
        self._drop_front(bisect_left(self._times, cutoff_time))

    def is_valid_start(self, start: int) -> bool:
        return start >= self.floor

    def query(
        self,
        start: int,
        *,
        types: frozenset[str] | None = None,
        label_id: str | None = None,
        max_results: int = 100,
        page_after: int | None = None,
    ) -> tuple[list[HistoryRecord], int | None]:
        """Records with id > start (or > page_after when paging) that match the filters.

        Returns the page and the id to resume after (None when nothing matching is left).
        """
        if max_results <= 0:
            raise ValueError("max_results must be positive")
        after = start if page_after is None else page_after
        if not self.is_valid_start(start) or after < self.floor:
            raise HistoryExpired(after)
        index = bisect_right(self._ids, after)
        page: list[HistoryRecord] = []
        records = self._records
        end = len(records)
        while index < end:
            record = records[index]
            index += 1
            if types is not None and types.isdisjoint(record.kinds()):
                continue
            if label_id is not None and not record.relates_to(label_id):
                continue
            if len(page) == max_results:
                return page, page[-1].id  # at least one more match exists
            page.append(record)
        return page, None
