import uuid

import pytest

from mailwatch.domain.models import EventType, LabelFilter, LabelFilterBehavior
from mailwatch.domain.models import MessageLabels
from mailwatch.gmail.history import HistoryPage, history_record
from mailwatch.sync.history_events import (
    announced_by_watch, covered_through, events_from_history, labels_needed, newest_history_id, served_labels,
    usable,
)

MAILBOX = uuid.uuid4()


def parse(records):
    return [history_record(record) for record in records]


def served_page(records, history_id=None, next_page_token=None):
    """`records` as Gmail serves them on one page: every message carrying the labels it has
    when the page is served (as given in the records), the mailbox at `history_id`."""
    parsed = tuple(parse(records))
    return HistoryPage(parsed, history_id or max(r.id for r in parsed), next_page_token)


def translate(records, label_ids=(), behavior=LabelFilterBehavior.INCLUDE):
    page = served_page(records)
    return events_from_history(
        page.records, mailbox_id=MAILBOX, email_address="a@example.com",
        label_filter=LabelFilter(tuple(label_ids), behavior), known_labels=served_labels([page]),
        covered=covered_through([page]),
    )


def added(hid, mid, labels):
    return {"id": str(hid), "messagesAdded": [{"message": {"id": mid, "threadId": "t" + mid, "labelIds": labels}}]}


def relabelled(hid, key, mid, labels, changed):
    return {"id": str(hid), key: [{"message": {"id": mid, "threadId": "t" + mid, "labelIds": labels}, "labelIds": changed}]}


def test_every_record_kind_becomes_its_event_in_order():
    # Served after all four records: m1 is gone, m2 is now STARRED only.
    records = [
        added(10, "m1", None),
        {"id": "11", "messagesDeleted": [{"message": {"id": "m1", "threadId": "tm1"}}]},
        added(12, "m2", ["STARRED"]),
        relabelled(13, "labelsAdded", "m2", ["STARRED"], ["STARRED"]),
        relabelled(14, "labelsRemoved", "m2", ["STARRED"], ["INBOX"]),
    ]
    events = translate(records)
    assert [(e.type, e.history_id, e.message_id, e.label_ids) for e in events] == [
        (EventType.MESSAGE_ADDED, 10, "m1", ()),  # gone before the page was served: its labels are unknown
        (EventType.MESSAGE_DELETED, 11, "m1", ()),
        (EventType.MESSAGE_ADDED, 12, "m2", ("INBOX",)),  # its labels then: the later changes undone
        (EventType.LABELS_ADDED, 13, "m2", ("STARRED",)),
        (EventType.LABELS_REMOVED, 14, "m2", ("INBOX",)),
    ]
    assert all(e.thread_id == "t" + e.message_id and e.mailbox_id == MAILBOX for e in events)


def test_labels_in_history_are_as_served_so_an_add_archived_before_the_sync_is_kept():
    # Added to INBOX, archived before the page was served: Gmail shows it without INBOX.
    records = [added(5, "m", ["UNREAD"]), relabelled(6, "labelsRemoved", "m", ["UNREAD"], ["INBOX"])]
    assert [(e.type, e.label_ids) for e in translate(records, ["INBOX"])] == [
        (EventType.MESSAGE_ADDED, ("UNREAD", "INBOX")), (EventType.LABELS_REMOVED, ("INBOX",))]
    # Added outside INBOX, moved there later: no add the consumer never saw in its set, then the move.
    records = [added(5, "n", ["INBOX"]), relabelled(6, "labelsAdded", "n", ["INBOX"], ["INBOX"])]
    assert [(e.type, e.label_ids) for e in translate(records, ["INBOX"])] == [(EventType.LABELS_ADDED, ("INBOX",))]


def test_served_labels_of_a_page_with_more_to_come_are_traced_only_through_what_is_listed():
    # Page 1 served at history 20; records 7..20 are on a page not listed yet.
    page = served_page([added(5, "m", ["SPAM"])], history_id=20, next_page_token="p2")
    kwargs = dict(mailbox_id=MAILBOX, email_address="a@example.com", label_filter=LabelFilter(("INBOX",)),
                  known_labels=served_labels([page]))
    assert not usable(served_labels([page])["m"], 5, covered_through([page]))
    # Unknown: reported, not dropped on a guess.
    assert [e.message_id for e in events_from_history(page.records, covered=covered_through([page]), **kwargs)] == ["m"]
    # With the rest listed (up to the page's history id), SPAM was its label at 5: dropped.
    rest = served_page([relabelled(9, "labelsAdded", "x", ["X"], ["X"])], history_id=21)
    assert events_from_history(page.records, later_records=rest.records, covered=covered_through([page, rest]),
                               **kwargs) == []


def test_include_filter_keeps_only_matching_messages():
    events = translate([added(5, "in", ["INBOX"]), added(6, "spam", ["SPAM"])], label_ids=["INBOX"])
    assert [e.message_id for e in events] == ["in"]


def test_exclude_filter_drops_matching_messages():
    events = translate([added(5, "in", ["INBOX"]), added(6, "spam", ["SPAM"])], ["SPAM"], LabelFilterBehavior.EXCLUDE)
    assert [e.message_id for e in events] == ["in"]


def test_label_change_that_moves_a_message_out_of_the_watched_set_is_reported():
    leaving = relabelled(7, "labelsRemoved", "m", ["ARCHIVE"], ["INBOX"])
    entering = relabelled(8, "labelsAdded", "n", ["INBOX"], ["INBOX"])
    unrelated = relabelled(9, "labelsAdded", "o", ["SPAM", "X"], ["X"])
    events = translate([leaving, entering, unrelated], label_ids=["INBOX"])
    assert [(e.type, e.message_id) for e in events] == [
        (EventType.LABELS_REMOVED, "m"),
        (EventType.LABELS_ADDED, "n"),
    ]


@pytest.mark.parametrize("labels", [[], ["INBOX"], ["SPAM"]])
def test_a_deleted_message_is_always_reported(labels):
    # Gmail's labels for it come after its deletion: they cannot prove it was outside the set.
    record = {"id": "3", "messagesDeleted": [{"message": {"id": "m", "labelIds": labels}}]}
    assert len(translate([record], label_ids=["INBOX"])) == 1


def test_newest_history_id_covers_records_created_while_paging():
    assert newest_history_id(100, parse([{"id": "90"}, {"id": "101"}])) == 101
    assert newest_history_id(100, parse([{"id": "90"}])) == 100
    assert newest_history_id(100, []) == 100


# -- history as Gmail documents it: messages carry only id and threadId ------------------------------
def bare(hid, key, mid, changed=None):
    entry = {"message": {"id": mid, "threadId": "t" + mid}}
    if changed is not None:
        entry["labelIds"] = changed
    return {"id": str(hid), "messages": [{"id": mid, "threadId": "t" + mid}], key: [entry]}


def test_without_a_filter_only_added_messages_need_labels_and_nothing_is_dropped():
    records = [bare(1, "messagesAdded", "a"), bare(2, "labelsAdded", "a", ["STARRED"]),
               bare(3, "messagesDeleted", "a"), added(4, "b", ["INBOX"])]
    # Both need a state (labels in history are as served: the listing decides whether they do).
    assert labels_needed(parse(records), LabelFilter()) == ["a", "b"]
    assert [(e.type, e.label_ids) for e in translate(records)][-1] == (EventType.MESSAGE_ADDED, ("INBOX",))
    records = records[:3]
    assert [(e.type, e.label_ids) for e in translate(records)] == [
        (EventType.MESSAGE_ADDED, ()), (EventType.LABELS_ADDED, ("STARRED",)), (EventType.MESSAGE_DELETED, ())]


def test_label_changes_of_watched_labels_decide_without_fetching():
    records = [bare(1, "labelsAdded", "a", ["INBOX"]), bare(2, "labelsRemoved", "b", ["INBOX", "UNREAD"])]
    assert labels_needed(parse(records), LabelFilter(("INBOX",))) == []
    assert [(e.type, e.message_id) for e in translate(records, ["INBOX"])] == [
        (EventType.LABELS_ADDED, "a"), (EventType.LABELS_REMOVED, "b")]


def test_unknown_labels_are_fetched_once_per_message_and_decide():
    records = [bare(1, "messagesAdded", "in"), bare(2, "messagesAdded", "spam"),
               bare(3, "labelsAdded", "in", ["STARRED"]), bare(4, "labelsRemoved", "spam", ["UNREAD"]),
               bare(5, "messagesAdded", "gone")]
    label_filter = LabelFilter(("INBOX",))
    assert labels_needed(parse(records), label_filter) == ["in", "spam", "gone"]
    known = {"in": MessageLabels(("INBOX", "STARRED"), 3), "spam": MessageLabels(("SPAM",), 4), "gone": None}
    events = events_from_history(parse(records), mailbox_id=MAILBOX, email_address="a@example.com",
                                 label_filter=label_filter, known_labels=known)
    assert [(e.type, e.message_id, e.label_ids) for e in events] == [
        # Its labels when added: the later STARRED undone.
        (EventType.MESSAGE_ADDED, "in", ("INBOX",)),
        (EventType.LABELS_ADDED, "in", ("STARRED",)),
        # Gone before it could be asked about: it cannot be proven outside the set, so it is reported.
        (EventType.MESSAGE_ADDED, "gone", ()),
    ]


def test_a_message_that_left_the_set_later_in_the_page_is_still_reported_as_added():
    records = [bare(1, "messagesAdded", "m"), bare(2, "labelsRemoved", "m", ["INBOX"]),
               bare(3, "labelsAdded", "m", ["STARRED"])]
    known = {"m": MessageLabels(("UNREAD", "STARRED"), 3)}  # fetched after all three changes
    events = events_from_history(parse(records), mailbox_id=MAILBOX, email_address="a@example.com",
                                 label_filter=LabelFilter(("INBOX",)), known_labels=known)
    assert [(e.type, e.label_ids) for e in events] == [
        (EventType.MESSAGE_ADDED, ("UNREAD", "INBOX")), (EventType.LABELS_REMOVED, ("INBOX",))]


def test_a_message_changed_after_the_page_is_reported_rather_than_guessed():
    records = [bare(1, "messagesAdded", "m")]
    known = {"m": MessageLabels(("SPAM",), 9)}  # changed by a record beyond this page
    events = events_from_history(parse(records), mailbox_id=MAILBOX, email_address="a@example.com",
                                 label_filter=LabelFilter(("INBOX",)), known_labels=known)
    assert [(e.type, e.message_id) for e in events] == [(EventType.MESSAGE_ADDED, "m")]


def test_exclude_filter_with_unknown_labels():
    records = [bare(1, "messagesAdded", "a"), bare(2, "messagesAdded", "b"), bare(3, "labelsAdded", "a", ["SPAM"])]
    label_filter = LabelFilter(("SPAM",), LabelFilterBehavior.EXCLUDE)
    assert labels_needed(parse(records), label_filter) == ["a", "b"]
    known = {"a": MessageLabels(("INBOX", "SPAM"), 3), "b": MessageLabels(("SPAM",), 2)}
    events = events_from_history(parse(records), mailbox_id=MAILBOX, email_address="a@example.com",
                                 label_filter=label_filter, known_labels=known)
    # a was outside SPAM when added, then entered it (left the watched set): both reported.
    assert [(e.type, e.message_id) for e in events] == [(EventType.MESSAGE_ADDED, "a"), (EventType.LABELS_ADDED, "a")]


def test_a_missing_fetch_never_drops_a_message():
    records = [bare(1, "messagesAdded", "a"), bare(2, "labelsAdded", "b", ["STARRED"])]
    events = translate(records, ["INBOX"])  # nothing fetched: unknown labels count as "maybe in the set"
    assert [e.message_id for e in events] == ["a", "b"]


def test_later_records_trace_labels_fetched_after_the_page_back_to_it():
    page = [bare(1, "messagesAdded", "junk")]
    later = [bare(2, "labelsAdded", "junk", ["STARRED"])]
    known = {"junk": MessageLabels(("SPAM", "STARRED"), 2)}  # asked after the later change
    kwargs = dict(mailbox_id=MAILBOX, email_address="a@example.com", label_filter=LabelFilter(("INBOX",)),
                  known_labels=known)
    assert events_from_history(parse(page), later_records=parse(later), **kwargs) == []
    # Without the later history the fetched state is newer than the page: reported, not guessed.
    assert [e.message_id for e in events_from_history(parse(page), **kwargs)] == ["junk"]


def test_a_record_names_every_message_once_and_ignores_odd_shapes():
    record = {
        "id": "7",
        "messages": [{"id": "m1", "threadId": "t"}, "not an object", {"threadId": "no id"}],
        "messagesAdded": [{"message": {"id": "m1"}}, {"message": {"id": "m2"}}],
        "messagesDeleted": [{"message": {"id": "m3"}}],
        "labelsAdded": [{"message": {"id": "m2"}, "labelIds": ["X"]}, {"message": "odd"}],
        "labelsRemoved": "not a list",
    }
    assert history_record(record).message_ids == ("m1", "m2", "m3")
    assert history_record({"id": "8"}).message_ids == ()


def test_ids_gmail_sends_become_storable_event_text():
    records = [{"id": "10", "messagesAdded": [{"message": {"id": "m\x001", "threadId": "t\ud800", "labelIds": ["IN\x00BOX"]}}]},
               {"id": "11", "labelsAdded": [{"message": {"id": "m2", "threadId": "t2"}, "labelIds": ["L\x00"]}]}]
    events = translate(records)
    assert [(e.message_id, e.thread_id, e.label_ids) for e in events] == [
        ("m\ufffd1", "t?", ("IN\ufffdBOX",)), ("m2", "t2", ("L\ufffd",)),
    ]


def test_the_watch_announces_only_changes_it_can_be_shown_to_cover():
    page = served_page([
        added(1, "in", ["INBOX"]),  # in the watched set: announced
        added(2, "gone", None),  # gone before the page was served: reported, but proves nothing
        {"id": "3", "messagesDeleted": [{"message": {"id": "old"}}]},  # a deletion: labels never known
        relabelled(4, "labelsAdded", "moved", ["INBOX"], ["INBOX"]),  # a watched label itself changed
        relabelled(5, "labelsAdded", "spam", ["SPAM", "X"], ["X"]),  # outside the set: not even an event
    ])
    kwargs = dict(known_labels=served_labels([page]), covered=covered_through([page]))
    inbox = LabelFilter(("INBOX",))
    assert len(events_from_history(page.records, mailbox_id=MAILBOX, email_address="a@example.com",
                                   label_filter=inbox, **kwargs)) == 4
    assert announced_by_watch(page.records, label_filter=inbox, **kwargs) == 2
    assert announced_by_watch(page.records, label_filter=LabelFilter(), **kwargs) == 5  # no filter: everything
