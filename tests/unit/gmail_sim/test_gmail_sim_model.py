"""Mailbox changes, watch label filters, message rendering, clock."""

import pytest

from mailwatch_devstack.gmail_sim.clock import SimClock
from mailwatch_devstack.gmail_sim.history import LABEL_ADDED, LABEL_REMOVED, MESSAGE_ADDED
from mailwatch_devstack.gmail_sim.model import Mailbox, UnknownLabel, UnknownMessage, Watch


def mailbox():
    return Mailbox.create("a@x.com", 1000, rng=1)


def test_every_change_increases_history_id():
    box = mailbox()
    ids = [box.history_id]
    message, record = box.insert_message(now=0.0, label_ids=["INBOX"])
    ids.append(box.history_id)
    assert record.id == box.history_id == message.history_id
    records = box.modify_labels(message.id, now=0.0, add=["STARRED"], remove=["INBOX"])
    assert [r.kind for r in records] == [LABEL_ADDED, LABEL_REMOVED]
    ids.append(box.history_id)
    box.delete_message(message.id, now=0.0)
    ids.append(box.history_id)
    assert ids == sorted(set(ids))
    assert len(box.history) == 4


def test_modify_without_effect_records_nothing():
    box = mailbox()
    message, _ = box.insert_message(now=0.0, label_ids=["INBOX"])
    before = box.history_id
    assert box.modify_labels(message.id, now=0.0, add=["INBOX"], remove=["STARRED"]) == []
    assert box.history_id == before


def test_unknown_labels_and_messages():
    box = mailbox()
    with pytest.raises(UnknownLabel):
        box.insert_message(now=0.0, label_ids=["Label_9"])
    label = box.create_label("Work")
    assert label == "Label_1" and box.create_label("Work") == "Label_1"
    box.insert_message(now=0.0, label_ids=[label])
    with pytest.raises(UnknownMessage):
        box.delete_message("nope", now=0.0)


def test_threads_and_listing_newest_first_without_spam_trash():
    box = mailbox()
    first, _ = box.insert_message(now=0.0, label_ids=["INBOX"])
    reply, _ = box.insert_message(now=0.0, label_ids=["INBOX"], thread_id=first.thread_id)
    spam, _ = box.insert_message(now=0.0, label_ids=["SPAM"])
    assert reply.thread_id == first.id
    page, nxt, total = box.list_messages(label_ids=[], include_spam_trash=False, offset=0, limit=10)
    assert [m.id for m in page] == [reply.id, first.id] and total == 2 and nxt is None
    page, _, _ = box.list_messages(label_ids=["SPAM"], include_spam_trash=False, offset=0, limit=10)
    assert [m.id for m in page] == [spam.id]
    page, nxt, _ = box.list_messages(label_ids=[], include_spam_trash=True, offset=0, limit=2)
    assert len(page) == 2 and nxt == 2


def _record(box, labels, add=()):
    message, record = box.insert_message(now=0.0, label_ids=labels)
    if add:
        return box.modify_labels(message.id, now=0.0, add=add)[0]
    return record


def test_watch_label_filter_include_exclude():
    box = mailbox()
    inbox = _record(box, ["INBOX"])
    sent = _record(box, ["SENT"])
    starred_later = _record(box, ["SENT"], add=["INBOX"])
    include = Watch("projects/p/topics/t", frozenset({"INBOX"}), "INCLUDE", 0, 0)
    exclude = Watch("projects/p/topics/t", frozenset({"INBOX"}), "EXCLUDE", 0, 0)
    everything = Watch("projects/p/topics/t", frozenset(), "INCLUDE", 0, 0)
    assert include.matches(inbox) and not include.matches(sent) and include.matches(starred_later)
    assert not exclude.matches(inbox) and exclude.matches(sent) and not exclude.matches(starred_later)
    assert all(everything.matches(r) for r in (inbox, sent, starred_later))
    assert inbox.kind == MESSAGE_ADDED


def test_message_formats():
    box = mailbox()
    message, _ = box.insert_message(now=1.0, label_ids=["INBOX"], headers=[("Subject", "Hi"), ("From", "f@x")],
                                    body="Hello   there\nworld")
    minimal = message.to_json("minimal")
    assert set(minimal) == {"id", "threadId", "labelIds", "snippet", "historyId", "internalDate", "sizeEstimate"}
    assert minimal["snippet"] == "Hello there world" and minimal["internalDate"] == "1000"
    metadata = message.to_json("metadata", ["subject"])
    assert metadata["payload"]["headers"] == [{"name": "Subject", "value": "Hi"}]
    full = message.to_json("full")
    assert full["payload"]["body"]["size"] == len("Hello   there\nworld")
    assert {h["name"] for h in full["payload"]["headers"]} >= {"Subject", "From", "Date"}
    assert "raw" in message.to_json("raw")


def test_clock_advances_and_never_goes_back():
    clock = SimClock(wall=lambda: 1000.0)
    assert clock.now() == 1000.0
    clock.advance(86400)
    assert clock.now_ms() == (1000 + 86400) * 1000
    with pytest.raises(ValueError):
        clock.advance(-1)
    clock.reset()
    assert clock.now() == 1000.0
