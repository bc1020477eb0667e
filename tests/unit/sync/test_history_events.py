import uuid

import pytest

from mailwatch.domain.models import EventType, LabelFilter, LabelFilterBehavior
from mailwatch.sync.history_events import events_from_history, newest_history_id

MAILBOX = uuid.uuid4()


def translate(records, label_ids=(), behavior=LabelFilterBehavior.INCLUDE):
    return events_from_history(
        records, mailbox_id=MAILBOX, email_address="a@example.com",
        label_filter=LabelFilter(tuple(label_ids), behavior),
    )


def added(hid, mid, labels):
    return {"id": str(hid), "messagesAdded": [{"message": {"id": mid, "threadId": "t" + mid, "labelIds": labels}}]}


def test_every_record_kind_becomes_its_event_in_order():
    records = [
        added(10, "m1", ["INBOX"]),
        {"id": "11", "labelsAdded": [{"message": {"id": "m1", "threadId": "tm1", "labelIds": ["INBOX", "STARRED"]}, "labelIds": ["STARRED"]}]},
        {"id": "12", "labelsRemoved": [{"message": {"id": "m1", "threadId": "tm1", "labelIds": ["STARRED"]}, "labelIds": ["INBOX"]}]},
        {"id": "13", "messagesDeleted": [{"message": {"id": "m1", "threadId": "tm1"}}]},
    ]
    events = translate(records)
    assert [(e.type, e.history_id, e.message_id, e.label_ids) for e in events] == [
        (EventType.MESSAGE_ADDED, 10, "m1", ("INBOX",)),
        (EventType.LABELS_ADDED, 11, "m1", ("STARRED",)),
        (EventType.LABELS_REMOVED, 12, "m1", ("INBOX",)),
        (EventType.MESSAGE_DELETED, 13, "m1", ()),
    ]
    assert all(e.thread_id == "tm1" and e.mailbox_id == MAILBOX for e in events)


def test_include_filter_keeps_only_matching_messages():
    events = translate([added(5, "in", ["INBOX"]), added(6, "spam", ["SPAM"])], label_ids=["INBOX"])
    assert [e.message_id for e in events] == ["in"]


def test_exclude_filter_drops_matching_messages():
    events = translate([added(5, "in", ["INBOX"]), added(6, "spam", ["SPAM"])], ["SPAM"], LabelFilterBehavior.EXCLUDE)
    assert [e.message_id for e in events] == ["in"]


def test_label_change_that_moves_a_message_out_of_the_watched_set_is_reported():
    leaving = {"id": "7", "labelsRemoved": [{"message": {"id": "m", "labelIds": ["ARCHIVE"]}, "labelIds": ["INBOX"]}]}
    entering = {"id": "8", "labelsAdded": [{"message": {"id": "n", "labelIds": ["INBOX"]}, "labelIds": ["INBOX"]}]}
    unrelated = {"id": "9", "labelsAdded": [{"message": {"id": "o", "labelIds": ["SPAM", "X"]}, "labelIds": ["X"]}]}
    events = translate([leaving, entering, unrelated], label_ids=["INBOX"])
    assert [(e.type, e.message_id) for e in events] == [
        (EventType.LABELS_REMOVED, "m"),
        (EventType.LABELS_ADDED, "n"),
    ]


@pytest.mark.parametrize("labels,expected", [([], 1), (["INBOX"], 1), (["SPAM"], 0)])
def test_deleted_message_without_known_labels_is_reported(labels, expected):
    record = {"id": "3", "messagesDeleted": [{"message": {"id": "m", "labelIds": labels}}]}
    assert len(translate([record], label_ids=["INBOX"])) == expected


def test_newest_history_id_covers_records_created_while_paging():
    assert newest_history_id(100, [{"id": "90"}, {"id": "101"}]) == 101
    assert newest_history_id(100, [{"id": "90"}]) == 100
    assert newest_history_id(100, []) == 100
