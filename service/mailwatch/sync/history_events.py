"""Translate Gmail history records into change events (pure logic).

Gmail's history is unfiltered, while a mailbox's label filter decides what the
tenant sees. A label change is shown when the message was in the watched set
before *or* after it, so a consumer sees a message leave its set too.

Messages in history records may come without their labels. A label change
still names the labels it changed, which settles every change that touches a
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
from mailwatch.gmail.history import ChangeKind, HistoryChange, HistoryRecord

_EVENT = {
    ChangeKind.MESSAGE_ADDED: EventType.MESSAGE_ADDED,
    ChangeKind.MESSAGE_DELETED: EventType.MESSAGE_DELETED,
    ChangeKind.LABELS_ADDED: EventType.LABELS_ADDED,
    ChangeKind.LABELS_REMOVED: EventType.LABELS_REMOVED,
}
_LABEL_CHANGES = (ChangeKind.LABELS_ADDED, ChangeKind.LABELS_REMOVED)

# message id -> what Gmail said, or None when Gmail no longer has the message
KnownLabels = Mapping[str, "MessageLabels | None"]


def _touches_filter(changed: tuple[str, ...], label_filter: LabelFilter) -> bool:
    return not set(changed).isdisjoint(label_filter.label_ids)


def labels_needed(records: Iterable[HistoryRecord], label_filter: LabelFilter) -> list[str]:
    """Message ids (in first-seen order) whose labels must be fetched: added messages
    without labels and, under a filter, messages whose label change does not itself
    touch a watched label."""
    needed: dict[str, None] = {}
    for record in records:
        for change in record.changes:
            if change.message.label_ids is not None:
                continue
            if change.kind is ChangeKind.MESSAGE_ADDED or (
                change.kind in _LABEL_CHANGES and label_filter.label_ids
                and not _touches_filter(change.label_ids, label_filter)
            ):
                needed[change.message.id] = None
    return list(needed)


def last_changes(records: Iterable[HistoryRecord]) -> dict[str, int]:
    """For each message id in these records: the id of the last record that names it."""
    last: dict[str, int] = {}
    for record in records:
        for change in record.changes:
            last[change.message.id] = max(last.get(change.message.id, 0), record.id)
    return last


def _labels_after_each_change(
    records: list[HistoryRecord], later: list[HistoryRecord], known: KnownLabels,
) -> dict[tuple[int, int], tuple[str, ...] | None]:
    """For every change of a looked-up message, keyed (record index, change index):
    its labels right after that change.

    Walks the history backwards from the fetched labels (through `later`, the
    records after the page, then the page), undoing each label change. Only
    valid when the fetched state is no newer than the last record walked;
    otherwise (or for a message that is gone) the answer is None.
    """
    # In history order: the page's records (with their index), then the later ones.
    chronological = [*enumerate(records), *((None, record) for record in later)]
    page_last = max((record.id for _, record in chronological), default=0)
    current: dict[str, list[str] | None] = {}
    after: dict[tuple[int, int], tuple[str, ...] | None] = {}
    for index, record in reversed(chronological):
        for position in range(len(record.changes) - 1, -1, -1):
            change = record.changes[position]
            message_id = change.message.id
            if message_id not in known:
                continue
            if message_id not in current:  # its last record in the window: the walk starts here
                state = known[message_id]
                usable = state is not None and record.id <= state.history_id <= page_last
                current[message_id] = list(state.label_ids) if usable else None
            labels = current[message_id]
            if index is not None:
                after[(index, position)] = None if labels is None else tuple(labels)
            if labels is None:
                continue
            if change.kind is ChangeKind.LABELS_ADDED:
                labels[:] = [label for label in labels if label not in change.label_ids]
            elif change.kind is ChangeKind.LABELS_REMOVED:
                labels.extend(label for label in change.label_ids if label not in labels)
    return after


def events_from_history(
    records: Iterable[HistoryRecord],
    *,
    mailbox_id: uuid.UUID,
    email_address: str,
    label_filter: LabelFilter,
    known_labels: KnownLabels | None = None,
    later_records: Iterable[HistoryRecord] = (),
) -> list[NewEvent]:
    """Events in history order; within one record: added, deleted, labels added, labels removed.

    `known_labels` holds what `messages.get` said about the ids `labels_needed`
    named; `later_records` (history after these records, already listed) let
    labels fetched after later changes be traced back to these records.
    """
    records = list(records)
    rebuilt = _labels_after_each_change(records, list(later_records), known_labels or {})
    events: list[NewEvent] = []
    for index, record in enumerate(records):
        for position, change in enumerate(record.changes):
            own = change.message.label_ids
            # A deleted message is judged by what its record says: it cannot be asked about any more.
            after = own if own is not None or change.kind is ChangeKind.MESSAGE_DELETED else rebuilt.get((index, position))
            if _admits(change, after, own is not None, label_filter):
                reported = change.label_ids if change.kind in _LABEL_CHANGES else (after or ())
                events.append(_event(change, record.id, reported, mailbox_id, email_address))
    return events


def _event(change: HistoryChange, history_id: int, label_ids: tuple[str, ...],
           mailbox_id: uuid.UUID, email_address: str) -> NewEvent:
    return NewEvent(
        mailbox_id=mailbox_id, email_address=email_address, type=_EVENT[change.kind], history_id=history_id,
        message_id=change.message.id, thread_id=change.message.thread_id, label_ids=label_ids,
    )


def _admits(change: HistoryChange, after: tuple[str, ...] | None, exact: bool, label_filter: LabelFilter) -> bool:
    """Whether the tenant sees this change: the message was in the watched set at it
    (before or after it, for a label change), or that cannot be ruled out."""
    if change.kind is ChangeKind.MESSAGE_ADDED:
        return after is None or label_filter.admits(after)
    if change.kind is ChangeKind.MESSAGE_DELETED:
        # Without labels it cannot be proven outside the watched set.
        return not after or label_filter.admits(after)
    if not label_filter.label_ids:
        return True
    changed = change.label_ids
    if after is not None and (exact or not _touches_filter(changed, label_filter)):
        before = set(after) - set(changed) if change.kind is ChangeKind.LABELS_ADDED else set(after) | set(changed)
        return label_filter.admits(tuple(before)) or label_filter.admits(after)
    # A watched label itself changed (the message entered or left the set), or the
    # labels cannot be known: report it rather than risk losing it.
    return after is None or _touches_filter(changed, label_filter)


def newest_history_id(first_page_history_id: int, records: Iterable[HistoryRecord]) -> int:
    """The history id a sync may record as done.

    The first page's `historyId` is the mailbox's id when paging began, and
    every record up to it is on some page; records created while paging may
    lie beyond it, so the newest record id seen counts too.
    """
    return max([first_page_history_id, *(record.id for record in records)])
