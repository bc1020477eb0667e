"""Translate Gmail history records into change events (pure logic).

Gmail's history is unfiltered, while a mailbox's label filter decides what the
tenant sees. A label change is shown when the message was in the watched set
before *or* after it, so a consumer sees a message leave its set too.

A message's labels at a record are never read off the record: Gmail gives a
history message the labels it has *when the page is served* (or none at
all), and `messages.get` gives them as they are now with the id of the last
record that changed the message. Either is a state "after every record up to
history id H" (`MessageLabels`: the page's `historyId`, or the message's own),
and the labels at each record are rebuilt from it by undoing the changes
listed after the record, up to H. That is only possible when every record up
to H is listed (`covered_through`); `labels_needed` says which messages need a
state at all (added messages, whose event carries their labels; under a
filter, label changes that do not themselves touch a watched label). A
message whose labels at a record cannot be known (gone, or changed beyond the
listing) is reported: it cannot be proven outside the watched set, and
dropping it would lose an event.

Drafts (left out unless the registration includes them): Gmail records a draft
autosave as a new message with DRAFT and the deletion of the previous version,
and a send as a new message with SENT and the deletion of the draft. A version
still there when the page is read is known by its DRAFT label; one already
replaced is gone (labels unknown), and is known by how Gmail recorded its
replacement (`draft_versions`), so that neither its addition nor its deletion
reaches a consumer who never sees drafts.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Iterable, Iterator, Mapping, Sequence

from mailwatch.domain.models import EventType, LabelFilter, LabelFilterBehavior, MessageLabels, NewEvent
from mailwatch.gmail.history import ChangeKind, HistoryChange, HistoryPage, HistoryRecord

_EVENT = {
    ChangeKind.MESSAGE_ADDED: EventType.MESSAGE_ADDED,
    ChangeKind.MESSAGE_DELETED: EventType.MESSAGE_DELETED,
    ChangeKind.LABELS_ADDED: EventType.LABELS_ADDED,
    ChangeKind.LABELS_REMOVED: EventType.LABELS_REMOVED,
}
_LABEL_CHANGES = (ChangeKind.LABELS_ADDED, ChangeKind.LABELS_REMOVED)
DRAFT = "DRAFT"
SENT = "SENT"

# message id -> what Gmail said, or None when Gmail no longer has the message
KnownLabels = Mapping[str, "MessageLabels | None"]


def _touches_filter(changed: tuple[str, ...], label_filter: LabelFilter) -> bool:
    return not set(changed).isdisjoint(label_filter.label_ids)


def labels_needed(records: Iterable[HistoryRecord], label_filter: LabelFilter) -> list[str]:
    """Message ids (in first-seen order) whose labels at their records must be known:
    added messages and, under a filter, messages whose label change does not itself
    touch a watched label."""
    needed: dict[str, None] = {}
    for record in records:
        for change in record.changes:
            if change.kind is ChangeKind.MESSAGE_ADDED or (
                change.kind in _LABEL_CHANGES and label_filter.label_ids
                and not _touches_filter(change.label_ids, label_filter)
            ):
                needed[change.message.id] = None
    return list(needed)


def served_labels(pages: Iterable[HistoryPage]) -> dict[str, MessageLabels]:
    """The labels the history gave each message, as of the last of `pages` (in listing
    order) that names it with labels: its labels after every record up to that page's
    `historyId`, the mailbox's history id when Gmail served it."""
    served: dict[str, MessageLabels] = {}
    for page in pages:
        for record in page.records:
            for change in record.changes:
                if change.message.label_ids is not None:
                    served[change.message.id] = MessageLabels(change.message.label_ids, page.history_id)
    return served


def covered_through(pages: list[HistoryPage]) -> int:
    """The history id up to which every record is listed in `pages` (consecutive pages of
    one listing): the last record's, or the last page's `historyId` if it ended the
    listing (every record up to it was listed by then)."""
    last_record = max((record.id for page in pages for record in page.records), default=0)
    if pages and pages[-1].next_page_token is None:
        return max(last_record, pages[-1].history_id)
    return last_record


def usable(state: MessageLabels | None, last_change: int, covered: int) -> bool:
    """Whether `state` can be traced back through the listing to a message whose last
    listed record is `last_change`: no listed change after it, none missing before it."""
    return state is not None and last_change <= state.history_id <= covered


def deleted_messages(records: Iterable[HistoryRecord]) -> frozenset[str]:
    """Ids of the messages these records delete."""
    return frozenset(change.message.id for record in records for change in record.changes
                     if change.kind is ChangeKind.MESSAGE_DELETED)


def last_changes(records: Iterable[HistoryRecord]) -> dict[str, int]:
    """For each message id in these records: the id of the last record that names it."""
    last: dict[str, int] = {}
    for record in records:
        for change in record.changes:
            last[change.message.id] = max(last.get(change.message.id, 0), record.id)
    return last


def _labels_after_each_change(
    records: list[HistoryRecord], later: list[HistoryRecord], known: KnownLabels, covered: int,
) -> dict[tuple[int, int], tuple[str, ...] | None]:
    """For every change of a message with a known state, keyed (record index, change
    index): its labels right after that change.

    Walks the history backwards from the state (through `later`, the records after
    the page, then the page), undoing each label change. Only valid when the state
    is no older than the message's last record walked and every record up to the
    state is listed (`usable`); otherwise (or for a message that is gone) None.
    """
    # In history order: the page's records (with their index), then the later ones.
    chronological = [*enumerate(records), *((None, record) for record in later)]
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
                current[message_id] = list(state.label_ids) if usable(state, record.id, covered) else None
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
    covered: int | None = None,
    include_drafts: bool = True,
    previous_record: HistoryRecord | None = None,
) -> list[NewEvent]:
    """Events in history order; within one record: added, deleted, labels added, labels removed.

    `known_labels` holds a state per message (`MessageLabels`: labels after every
    record up to its history id, from `served_labels` or `messages.get`);
    `later_records` (history after these records, already listed) let a state
    newer than these records be traced back to them; `covered`: every record up
    to it is among these and the later ones (default: the last one's id).
    Without `include_drafts`, changes to drafts are left out (`_without_drafts`);
    `previous_record` is the record listed just before these (a draft's
    replacement may be recorded there).
    """
    records, later_records = list(records), list(later_records)
    drafts = None if include_drafts else draft_versions(
        [*([previous_record] if previous_record else []), *records, *later_records], known_labels or {})
    events: list[NewEvent] = []
    for record, change, after in _judged(records, later_records, known_labels, covered):
        if drafts is not None:
            shown = _without_drafts(change, after, drafts)
            if shown is None:
                continue
            change = shown
        if _admits(change, after, label_filter):
            reported = change.label_ids if change.kind in _LABEL_CHANGES else (after or ())
            events.append(_event(change, record.id, reported, mailbox_id, email_address))
    return events


def announced_by_watch(
    records: Iterable[HistoryRecord], *, label_filter: LabelFilter, known_labels: KnownLabels | None = None,
    later_records: Iterable[HistoryRecord] = (), covered: int | None = None,
) -> int:
    """How many of these changes Gmail's watch with `label_filter` announces for certain (same
    arguments as `events_from_history`): every change without a filter; under a filter, a
    change to a message whose labels at it are known to be in the watched set (before or after
    it), or, under INCLUDE, one that adds or removes a watched label. A change reported only
    because its message's labels are unknown (a deletion, a message gone) proves nothing."""
    count = 0
    for _, change, after in _judged(records, later_records, known_labels, covered):
        if not label_filter.label_ids:
            count += 1
        elif after is not None:
            count += _admits(change, after, label_filter)
        elif change.kind in _LABEL_CHANGES and label_filter.behavior is LabelFilterBehavior.INCLUDE:
            count += _touches_filter(change.label_ids, label_filter)
    return count


def _judged(records: Iterable[HistoryRecord], later_records: Iterable[HistoryRecord],
            known_labels: KnownLabels | None, covered: int | None,
            ) -> Iterator[tuple[HistoryRecord, HistoryChange, tuple[str, ...] | None]]:
    """Each change of `records` in order, with its message's labels right after it (None: unknown)."""
    records, later_records = list(records), list(later_records)
    if covered is None:
        covered = max((record.id for record in [*records, *later_records]), default=0)
    rebuilt = _labels_after_each_change(records, later_records, known_labels or {}, covered)
    for index, record in enumerate(records):
        for position, change in enumerate(record.changes):
            # A deleted message's labels are never known: Gmail's state comes after the deletion.
            after = None if change.kind is ChangeKind.MESSAGE_DELETED else rebuilt.get((index, position))
            yield record, change, after


def draft_versions(records: Sequence[HistoryRecord], known_labels: KnownLabels) -> frozenset[str]:
    """Ids of the messages in `records` (consecutive records of the history, in order)
    that are draft versions: a message whose known labels carry DRAFT, and a message
    not known to be anything else that was deleted as Gmail deletes a replaced draft
    version: in the record that adds another message of its thread, or the record right
    after it, that message being a draft version itself or sent mail (SENT)."""
    def labels(message_id: str) -> tuple[str, ...] | None:
        state = known_labels.get(message_id)
        return None if state is None else state.label_ids

    drafts = {change.message.id for record in records for change in record.changes
              if DRAFT in (labels(change.message.id) or ())}
    # Backwards: a version's successor (added before the version's deletion) is judged first,
    # since whether it is a draft version itself depends on its own, later, deletion.
    for index in range(len(records) - 1, -1, -1):
        nearby = records[max(index - 1, 0):index + 1]
        for change in records[index].changes:
            gone = change.message
            if change.kind is not ChangeKind.MESSAGE_DELETED or labels(gone.id) is not None or gone.thread_id is None:
                continue
            successors = [added.message.id for record in nearby for added in record.changes
                          if added.kind is ChangeKind.MESSAGE_ADDED and added.message.thread_id == gone.thread_id
                          and added.message.id != gone.id]
            if any(successor in drafts or SENT in (labels(successor) or ()) for successor in successors):
                drafts.add(gone.id)
    return frozenset(drafts)


def _without_drafts(change: HistoryChange, after: tuple[str, ...] | None,
                    drafts: frozenset[str]) -> HistoryChange | None:
    """The change as a consumer who is not shown drafts sees it: None when it is left out.

    A draft's addition, label changes and deletion are left out. A draft that becomes
    mail without a new message (DRAFT removed) is, for that consumer, mail added then."""
    if after is not None:
        before = _labels_before(change, after)
        if DRAFT in before and DRAFT not in after:
            return replace(change, kind=ChangeKind.MESSAGE_ADDED, label_ids=())
        return None if DRAFT in before or DRAFT in after else change
    return None if change.message.id in drafts else change


def _labels_before(change: HistoryChange, after: tuple[str, ...]) -> set[str]:
    """A message's labels right before `change`, from those right after it."""
    if change.kind is ChangeKind.LABELS_ADDED:
        return set(after) - set(change.label_ids)
    if change.kind is ChangeKind.LABELS_REMOVED:
        return set(after) | set(change.label_ids)
    return set() if change.kind is ChangeKind.MESSAGE_ADDED else set(after)


def _event(change: HistoryChange, history_id: int, label_ids: tuple[str, ...],
           mailbox_id: uuid.UUID, email_address: str) -> NewEvent:
    return NewEvent(
        mailbox_id=mailbox_id, email_address=email_address, type=_EVENT[change.kind], history_id=history_id,
        message_id=change.message.id, thread_id=change.message.thread_id, label_ids=label_ids,
    )


def _admits(change: HistoryChange, after: tuple[str, ...] | None, label_filter: LabelFilter) -> bool:
    """Whether the tenant sees this change: the message was in the watched set at it
    (before or after it, for a label change), or that cannot be ruled out."""
    if not label_filter.label_ids or after is None:
        # No filter, or labels that cannot be known (a deleted message's never are):
        # report it rather than risk losing it.
        return True
    if change.kind in _LABEL_CHANGES:
        return label_filter.admits(tuple(_labels_before(change, after))) or label_filter.admits(after)
    return label_filter.admits(after)


def newest_history_id(first_page_history_id: int, records: Iterable[HistoryRecord]) -> int:
    """The history id a sync may record as done.

    The first page's `historyId` is the mailbox's id when paging began, and
    every record up to it is on some page; records created while paging may
    lie beyond it, so the newest record id seen counts too.
    """
    return max([first_page_history_id, *(record.id for record in records)])
