"""Drafts left out of a registration's events (sync/history_events.py), from history as Gmail records it:
an autosave adds a new message with DRAFT and deletes the previous version in its thread, a send adds a
message with SENT and deletes the draft. A version replaced before the page is served is gone: its labels
are unknown, and only how its deletion was recorded tells it apart from mail."""

import uuid

from mailwatch.domain.models import EventType, LabelFilter, LabelFilterBehavior, MessageLabels
from mailwatch.gmail.history import HistoryPage, history_record
from mailwatch.sync.history_events import covered_through, draft_versions, events_from_history, served_labels

MAILBOX = uuid.uuid4()


def message(mid, thread, labels=None):
    body = {"id": mid, "threadId": thread}
    if labels is not None:
        body["labelIds"] = labels
    return {"message": body}


def added(hid, mid, thread, labels=None):
    return {"id": str(hid), "messagesAdded": [message(mid, thread, labels)]}


def deleted(hid, mid, thread):
    return {"id": str(hid), "messagesDeleted": [message(mid, thread)]}


def relabelled(hid, key, mid, thread, labels, changed):
    return {"id": str(hid), key: [{**message(mid, thread, labels), "labelIds": changed}]}


def events(records, *, include_drafts=False, label_ids=(), previous=None):
    parsed = tuple(history_record(record) for record in records)
    page = HistoryPage(parsed, max(r.id for r in parsed), None)
    # The previous record was served on the page before, with its messages' labels then.
    served = served_labels([HistoryPage((history_record(previous),), page.history_id, "next"), page]
                           if previous else [page])
    return [(e.type, e.message_id, e.label_ids) for e in events_from_history(
        page.records, mailbox_id=MAILBOX, email_address="a@example.com",
        label_filter=LabelFilter(tuple(label_ids), LabelFilterBehavior.INCLUDE), known_labels=served,
        covered=covered_through([page]), include_drafts=include_drafts,
        previous_record=None if previous is None else history_record(previous),
    )]


# Three autosaves then a send, all before the sync reads the page: v1..v3 are gone, s has SENT.
AUTOSAVES_THEN_SEND = [
    added(10, "v1", "t"),
    added(12, "v2", "t"), deleted(13, "v1", "t"),
    added(15, "v3", "t"), deleted(16, "v2", "t"),
    added(18, "s", "t", ["SENT"]), deleted(19, "v3", "t"),
]


def test_replaced_versions_and_their_deletions_are_left_out_and_the_sent_message_is_delivered():
    assert events(AUTOSAVES_THEN_SEND) == [(EventType.MESSAGE_ADDED, "s", ("SENT",))]


def test_with_drafts_included_every_version_is_added_and_each_replaced_one_deleted():
    assert [(kind, mid) for kind, mid, _ in events(AUTOSAVES_THEN_SEND, include_drafts=True)] == [
        (EventType.MESSAGE_ADDED, "v1"), (EventType.MESSAGE_ADDED, "v2"), (EventType.MESSAGE_DELETED, "v1"),
        (EventType.MESSAGE_ADDED, "v3"), (EventType.MESSAGE_DELETED, "v2"),
        (EventType.MESSAGE_ADDED, "s"), (EventType.MESSAGE_DELETED, "v3"),
    ]


def test_a_draft_still_there_is_left_out_by_its_label_and_so_is_the_version_it_replaced():
    records = [added(10, "v1", "t"), added(12, "v2", "t", ["DRAFT"]), deleted(13, "v1", "t")]
    assert events(records) == []
    assert draft_versions([history_record(r) for r in records], served_labels([HistoryPage(
        tuple(history_record(r) for r in records), 13, None)])) == {"v1", "v2"}


def test_a_replacement_recorded_on_the_previous_page_still_marks_the_deleted_version():
    # v1 was left out by an earlier sync; v2's addition ended the previous page, v1's deletion starts this one.
    previous = added(12, "v2", "t", ["DRAFT"])
    assert events([deleted(13, "v1", "t")], previous=previous) == []
    assert events([deleted(13, "v1", "t")]) == [(EventType.MESSAGE_DELETED, "v1", ())]  # nothing says it was a draft


def test_mail_deleted_without_a_draft_or_sent_successor_is_reported():
    records = [
        added(10, "m1", "t"),  # gone: labels unknown
        added(12, "m2", "t", ["INBOX"]), deleted(13, "m1", "t"),  # a reply arrived, then m1 was deleted
        added(15, "m3", "u", ["SENT"]), deleted(16, "m4", "t"),  # sent mail in another thread
    ]
    assert [(kind, mid) for kind, mid, _ in events(records)] == [
        (EventType.MESSAGE_ADDED, "m1"), (EventType.MESSAGE_ADDED, "m2"), (EventType.MESSAGE_DELETED, "m1"),
        (EventType.MESSAGE_ADDED, "m3"), (EventType.MESSAGE_DELETED, "m4"),
    ]


def test_a_message_known_to_be_mail_is_not_taken_for_a_draft_version():
    # m1 is still there without DRAFT when a later page is served: known labels win over the pattern.
    parsed = tuple(history_record(r) for r in [added(12, "d", "t", ["DRAFT"]), deleted(13, "m1", "t")])
    known = {"d": MessageLabels(("DRAFT",), 13), "m1": MessageLabels(("INBOX",), 11)}
    assert draft_versions(parsed, known) == {"d"}


def test_label_changes_on_a_draft_are_left_out_and_a_draft_turned_mail_in_place_is_added():
    records = [
        added(10, "d", "t", ["SENT"]),
        relabelled(11, "labelsAdded", "d", "t", ["SENT"], ["STARRED"]),  # starred while a draft
        relabelled(12, "labelsRemoved", "d", "t", ["SENT"], ["STARRED"]),
        relabelled(13, "labelsAdded", "d", "t", ["SENT"], ["SENT"]),  # sent, keeping its id
        relabelled(14, "labelsRemoved", "d", "t", ["SENT"], ["DRAFT"]),
    ]
    assert events(records) == [(EventType.MESSAGE_ADDED, "d", ("SENT",))]
    assert [kind for kind, _, _ in events(records, include_drafts=True)] == [
        EventType.MESSAGE_ADDED, EventType.LABELS_ADDED, EventType.LABELS_REMOVED, EventType.LABELS_ADDED,
        EventType.LABELS_REMOVED,
    ]


def test_the_label_filter_still_applies_to_what_is_left():
    assert events(AUTOSAVES_THEN_SEND, label_ids=["INBOX"]) == []
    assert events(AUTOSAVES_THEN_SEND, label_ids=["SENT"]) == [(EventType.MESSAGE_ADDED, "s", ("SENT",))]
