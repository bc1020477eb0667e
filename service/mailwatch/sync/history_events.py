"""Translate Gmail `history.list` records into change events (pure logic).

Gmail's history is unfiltered, while a mailbox's label filter decides what the
tenant sees. A label change is shown when the message was in the watched set
before *or* after it, so a consumer sees a message leave its set too.
"""

from __future__ import annotations

import uuid
from typing import Iterable

from mailwatch.domain.models import EventType, LabelFilter, NewEvent


def _message(entry: dict) -> dict:
    message = entry.get("message") if isinstance(entry, dict) else None
    return message if isinstance(message, dict) else {}


def _labels(value) -> tuple[str, ...]:
    return tuple(str(label) for label in value) if isinstance(value, list) else ()


def events_from_history(
    records: Iterable[dict],
    *,
    mailbox_id: uuid.UUID,
    email_address: str,
    label_filter: LabelFilter,
) -> list[NewEvent]:
    """Events in history order; within one record: added, deleted, labels added, labels removed."""
    events: list[NewEvent] = []

    def emit(kind: EventType, history_id: int, message: dict, label_ids: tuple[str, ...]) -> None:
        if not message.get("id"):
            return  # Gmail never sends this; a record without an id carries nothing to report
        events.append(
            NewEvent(
                mailbox_id=mailbox_id,
                email_address=email_address,
                type=kind,
                history_id=history_id,
                message_id=str(message["id"]),
                thread_id=str(message.get("threadId")) if message.get("threadId") else None,
                label_ids=label_ids,
            )
        )

    for record in records:
        history_id = int(record["id"])
        for entry in record.get("messagesAdded", ()):
            message = _message(entry)
            labels = _labels(message.get("labelIds"))
            if label_filter.admits(labels):
                emit(EventType.MESSAGE_ADDED, history_id, message, labels)
        for entry in record.get("messagesDeleted", ()):
            message = _message(entry)
            labels = _labels(message.get("labelIds"))
            # A deleted message may come without labels; then it cannot be
            # proven outside the watched set, so it is reported.
            if not labels or label_filter.admits(labels):
                emit(EventType.MESSAGE_DELETED, history_id, message, labels)
        for key, kind in (("labelsAdded", EventType.LABELS_ADDED), ("labelsRemoved", EventType.LABELS_REMOVED)):
            for entry in record.get(key, ()):
                message = _message(entry)
                after = set(_labels(message.get("labelIds")))
                changed = _labels(entry.get("labelIds"))
                before = after - set(changed) if kind is EventType.LABELS_ADDED else after | set(changed)
                if label_filter.admits(tuple(before)) or label_filter.admits(tuple(after)):
                    emit(kind, history_id, message, changed)
    return events


def newest_history_id(first_page_history_id: int, records: Iterable[dict]) -> int:
    """The history id a sync may record as done.

    The first page's `historyId` is the mailbox's id when paging began, and
    every record up to it is on some page; records created while paging may
    lie beyond it, so the newest record id seen counts too.
    """
    newest = first_page_history_id
    for record in records:
        newest = max(newest, int(record["id"]))
    return newest
