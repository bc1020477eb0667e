"""`users.history.list` answers as typed records: Gmail's JSON is read here and nowhere else.

A history record lists what happened to messages at one history id:
messages added and deleted, labels added and removed. Gmail's messages in
history "will typically only have `id` and `threadId`" (the discovery
document), so a message's `labelIds` may be absent (`None` here); a label
change always names the labels it changed. Ids and labels are Gmail's text,
made storable here (Postgres' text and jsonb refuse NUL), where they become
ours. Entries without a message id carry nothing to report and are left out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailwatch.domain.text import storable_text


class ChangeKind(enum.Enum):
    """The kinds of change a record holds, in the order the sync reports them within a record."""

    MESSAGE_ADDED = "messagesAdded"
    MESSAGE_DELETED = "messagesDeleted"
    LABELS_ADDED = "labelsAdded"
    LABELS_REMOVED = "labelsRemoved"


@dataclass(frozen=True)
class HistoryMessage:
    id: str
    thread_id: str | None = None
    label_ids: tuple[str, ...] | None = None  # None: Gmail left them out


@dataclass(frozen=True)
class HistoryChange:
    kind: ChangeKind
    message: HistoryMessage
    label_ids: tuple[str, ...] = ()  # the labels a label change added or removed


@dataclass(frozen=True)
class HistoryRecord:
    id: int
    changes: tuple[HistoryChange, ...] = ()  # by kind in ChangeKind's order, then as Gmail listed them
    message_ids: tuple[str, ...] = ()  # every message the record names (its `messages` too), first seen first

    def __post_init__(self) -> None:
        if not self.message_ids and self.changes:
            object.__setattr__(self, "message_ids", tuple(dict.fromkeys(c.message.id for c in self.changes)))


@dataclass(frozen=True)
class HistoryPage:
    records: tuple[HistoryRecord, ...]
    history_id: int  # the mailbox's history id when Gmail served the page
    next_page_token: str | None


def _labels(value: object) -> tuple[str, ...] | None:
    return tuple(map(storable_text, value)) if isinstance(value, list) else None


def _message(value: object) -> HistoryMessage | None:
    if not isinstance(value, dict) or not value.get("id"):
        return None
    thread_id = value.get("threadId")
    return HistoryMessage(
        id=storable_text(value["id"]),
        thread_id=storable_text(thread_id) if thread_id else None,
        label_ids=_labels(value.get("labelIds")),
    )


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


# (kind, its key in a record), in ChangeKind's order: read once, not per record.
_KINDS = tuple((kind, kind.value) for kind in ChangeKind)


def history_record(resource: dict) -> HistoryRecord:
    """One record of `history.list`; its `id` (a uint64 in a string) is required."""
    changes: list[HistoryChange] = []
    for kind, key in _KINDS:
        entries = resource.get(key)
        if not entries or not isinstance(entries, list):
            continue
        for entry in entries:
            message = _message(entry.get("message")) if isinstance(entry, dict) else None
            if message is not None:
                changes.append(HistoryChange(kind, message, _labels(entry.get("labelIds")) or ()))
    ids = dict.fromkeys([m.id for m in map(_message, _list(resource.get("messages"))) if m is not None])
    ids.update(dict.fromkeys([c.message.id for c in changes]))
    return HistoryRecord(id=int(resource["id"]), changes=tuple(changes), message_ids=tuple(ids))


def history_page(response: dict) -> HistoryPage:
    """A whole `history.list` answer. A page may carry a `nextPageToken` and no `history`."""
    return HistoryPage(
        records=tuple(history_record(record) for record in _list(response.get("history"))),
        history_id=int(response["historyId"]),
        next_page_token=response.get("nextPageToken") or None,
    )
