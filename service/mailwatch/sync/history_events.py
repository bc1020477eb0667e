"""Translate Gmail `history.list` records into change events (pure logic).

Gmail's history is unfiltered, while a mailbox's label filter decides what the
tenant sees. A label change is shown when the message was in the watched set
before *or* after it, so a consumer sees a message leave its set too.

Messages in history records "will typically only have `id` and `threadId`"
(the discovery document): their labels may be missing. A label change still
names the labels it changed, which settles every change that touches a
watched label. For the rest, the caller fetches the message's current labels
and last-change history id (`messages.get(format=minimal)`; `labels_needed`
says which ids) and the labels at each record are rebuilt by undoing the
page's later changes — valid when nothing changed the message after the page.
A message whose labels at that point cannot be known (gone, or changed since)
is reported: it cannot be proven outside the watched set, and dropping it
would lose an event. MESSAGE_ADDED carries the message's labels, so added
messages are looked up whether or not a filter is set.
"""

from __future__ import annotations

import uuid
from typing import Iterable, Mapping

from mailwatch.domain.models import EventType, LabelFilter, MessageLabels, NewEvent
from mailwatch.domain.text import storable_text

_ADDED, _DELETED, _LABELS_ADDED, _LABELS_REMOVED = "messagesAdded", "messagesDeleted", "labelsAdded", "labelsRemoved"
_LABEL_CHANGES = ((_LABELS_ADDED, EventType.LABELS_ADDED), (_LABELS_REMOVED, EventType.LABELS_REMOVED))
# Within one record, events follow this order (and the rebuild walks it backwards).
_ORDER = (_ADDED, _DELETED, _LABELS_ADDED, _LABELS_REMOVED)


# message id -> what Gmail said, or None when Gmail no longer has the message
KnownLabels = Mapping[str, "MessageLabels | None"]


def _message(entry: dict) -> dict:
    message = entry.get("message") if isinstance(entry, dict) else None
    return message if isinstance(message, dict) else {}


def _labels(value) -> tuple[str, ...]:
    return tuple(str(label) for label in value) if isinstance(value, list) else ()


def _own_labels(message: dict) -> tuple[str, ...] | None:
    """The labels a history message carries, or None when Gmail left them out."""
    value = message.get("labelIds")
    return _labels(value) if isinstance(value, list) else None


def _touches_filter(changed: tuple[str, ...], label_filter: LabelFilter) -> bool:
    return not set(changed).isdisjoint(label_filter.label_ids)


def _entries(record: dict, key: str) -> list:
    value = record.get(key, ())
    return value if isinstance(value, list) else []


def labels_needed(records: Iterable[dict], label_filter: LabelFilter) -> list[str]:
    """Message ids (in first-seen order) whose labels must be fetched: added messages
    without labels and, under a filter, messages whose label change does not itself
    touch a watched label."""
    needed: dict[str, None] = {}
    for record in records:
        for entry in _entries(record, _ADDED):
            message = _message(entry)
            if message.get("id") and _own_labels(message) is None:
                needed[str(message["id"])] = None
        if not label_filter.label_ids:
            continue
        for key, _ in _LABEL_CHANGES:
            for entry in _entries(record, key):
                message = _message(entry)
                changed = _labels(entry.get("labelIds"))
                if message.get("id") and _own_labels(message) is None and not _touches_filter(changed, label_filter):
                    needed[str(message["id"])] = None
    return list(needed)


def last_changes(records: Iterable[dict]) -> dict[str, int]:
    """For each message id in these records: the id of the last record that names it."""
    last: dict[str, int] = {}
    for record in records:
        for key in _ORDER:
            for entry in _entries(record, key):
                message_id = _message(entry).get("id")
                if message_id:
                    last[str(message_id)] = max(last.get(str(message_id), 0), int(record["id"]))
    return last


def message_ids(record: dict) -> list[str]:
    """Every message id a history record names, in first-seen order (its `messages`
    list and each kind of change), read leniently: for reporting a record that
    could not be processed."""
    ids: dict[str, None] = {}
    for key in ("messages", *_ORDER):
        for entry in _entries(record, key):
            message = entry if key == "messages" and isinstance(entry, dict) else _message(entry)
            if message.get("id"):
                ids[str(message["id"])] = None
    return list(ids)


def _labels_after_each_entry(
    records: list[dict], later: list[dict], known: KnownLabels,
) -> dict[tuple[int, str, int], tuple | None]:
    """For every entry of a looked-up message: its labels right after that entry.

    Walks the history backwards from the fetched labels (through `later`, the
    records after the page, then the page), undoing each label change. Only
    valid when the fetched state is no newer than the last record walked;
    otherwise (or for a message that is gone) the answer is None.
    """
    # In history order: the page's records (with their index), then the later ones.
    chronological = [*enumerate(records), *((None, record) for record in later)]
    page_last = max((int(record["id"]) for _, record in chronological), default=0)
    current: dict[str, list[str] | None] = {}
    after: dict[tuple[int, str, int], tuple | None] = {}
    for index, record in reversed(chronological):
        for key in reversed(_ORDER):
            entries = _entries(record, key)
            for position in range(len(entries) - 1, -1, -1):
                entry = entries[position]
                message_id = str(_message(entry).get("id") or "")
                if message_id not in known:
                    continue
                if message_id not in current:  # its last record in the window: the walk starts here
                    state = known[message_id]
                    usable = state is not None and int(record["id"]) <= state.history_id <= page_last
                    current[message_id] = list(state.label_ids) if usable else None
                labels = current[message_id]
                if index is not None:
                    after[(index, key, position)] = None if labels is None else tuple(labels)
                if labels is None:
                    continue
                changed = _labels(entry.get("labelIds"))
                if key == _LABELS_ADDED:
                    labels[:] = [label for label in labels if label not in changed]
                elif key == _LABELS_REMOVED:
                    labels.extend(label for label in changed if label not in labels)
    return after


def events_from_history(
    records: Iterable[dict],
    *,
    mailbox_id: uuid.UUID,
    email_address: str,
    label_filter: LabelFilter,
    known_labels: KnownLabels | None = None,
    later_records: Iterable[dict] = (),
) -> list[NewEvent]:
    """Events in history order; within one record: added, deleted, labels added, labels removed.

    `known_labels` holds what `messages.get` said about the ids `labels_needed`
    named; `later_records` (history after these records, already listed) let
    labels fetched after later changes be traced back to these records.
    """
    records = list(records)
    rebuilt = _labels_after_each_entry(records, list(later_records), known_labels or {})
    events: list[NewEvent] = []

    def emit(kind: EventType, history_id: int, message: dict, label_ids: tuple[str, ...]) -> None:
        # Ids are Gmail's text (history records and messages.get): made storable here,
        # where they become our event, so no answer can make the page's commit fail.
        events.append(
            NewEvent(
                mailbox_id=mailbox_id,
                email_address=email_address,
                type=kind,
                history_id=history_id,
                message_id=storable_text(message["id"]),
                thread_id=storable_text(message["threadId"]) if message.get("threadId") else None,
                label_ids=tuple(storable_text(label) for label in label_ids),
            )
        )

    for index, record in enumerate(records):
        history_id = int(record["id"])
        for position, entry in enumerate(_entries(record, _ADDED)):
            message = _message(entry)
            if not message.get("id"):
                continue  # Gmail never sends this; a record without an id carries nothing to report
            labels = _own_labels(message)
            if labels is None:
                labels = rebuilt.get((index, _ADDED, position))
            if labels is None or label_filter.admits(labels):
                emit(EventType.MESSAGE_ADDED, history_id, message, labels or ())
        for entry in _entries(record, _DELETED):
            message = _message(entry)
            if not message.get("id"):
                continue
            labels = _own_labels(message)
            # A deleted message usually comes without labels and cannot be asked
            # about any more; then it cannot be proven outside the watched set.
            if not labels or label_filter.admits(labels):
                emit(EventType.MESSAGE_DELETED, history_id, message, labels or ())
        for key, kind in _LABEL_CHANGES:
            for position, entry in enumerate(_entries(record, key)):
                message = _message(entry)
                if not message.get("id"):
                    continue
                changed = _labels(entry.get("labelIds"))
                own = _own_labels(message)
                after = own if own is not None else rebuilt.get((index, key, position))
                if _admits_change(kind, after, changed, label_filter, own is not None):
                    emit(kind, history_id, message, changed)
    return events


def _admits_change(kind: EventType, after: tuple[str, ...] | None, changed: tuple[str, ...],
                   label_filter: LabelFilter, exact: bool) -> bool:
    """Whether the message was in the watched set before or after this change."""
    if not label_filter.label_ids:
        return True
    if after is not None and (exact or not _touches_filter(changed, label_filter)):
        before = set(after) - set(changed) if kind is EventType.LABELS_ADDED else set(after) | set(changed)
        return label_filter.admits(tuple(before)) or label_filter.admits(after)
    # A watched label itself changed (the message entered or left the set), or the
    # labels cannot be known: report it rather than risk losing it.
    return after is None or _touches_filter(changed, label_filter)


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
