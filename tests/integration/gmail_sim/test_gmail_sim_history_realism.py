"""History as Gmail serves it: labels as of serving time, empty pages, relabel records,
and messages the history lists before messages.get can see them."""

from __future__ import annotations

import pytest
from googleapiclient.errors import HttpError

from tests.integration.gmail_sim.support import ALICE, history_pages

pytestmark = pytest.mark.integration


@pytest.fixture
def alice(control, gmail):
    control.create_mailbox(ALICE)
    control.configure(history_label_ids=True)  # Gmail's way (off by default for now: see state.py)
    return gmail.for_user(ALICE)


def test_an_add_shows_the_labels_the_message_has_when_the_page_is_served(control, alice):
    start = control.history_id(ALICE)
    message = control.insert_message(ALICE, label_ids=["INBOX", "UNREAD"])
    before = alice.users().history().list(userId="me", startHistoryId=str(start)).execute()["history"]
    assert before[0]["messagesAdded"][0]["message"]["labelIds"] == ["INBOX", "UNREAD"]
    control.remove_labels(ALICE, message["id"], ["INBOX"])  # archived before the sync reads it
    [added, archived] = alice.users().history().list(userId="me", startHistoryId=str(start)).execute()["history"]
    # The same record, served again: the message no longer carries INBOX.
    assert added["id"] == before[0]["id"]
    assert added["messagesAdded"] == [{"message": {"id": message["id"], "threadId": message["threadId"],
                                                   "labelIds": ["UNREAD"]}}]
    assert archived["labelsRemoved"] == [{"message": {"id": message["id"], "threadId": message["threadId"],
                                                      "labelIds": ["UNREAD"]}, "labelIds": ["INBOX"]}]


def test_pages_with_a_token_and_no_history_then_every_record_once(control, alice):
    start = control.history_id(ALICE)
    inserted = control.insert_messages([{"emailAddress": ALICE} for _ in range(5)])
    assert control.configure(empty_history_pages=True)["emptyHistoryPages"] is True
    served = history_pages(alice, start, maxResults=2)
    assert [len(p.get("history", [])) for p in served] == [0, 2, 0, 2, 0, 1]
    assert all("nextPageToken" in p for p in served[:-1]) and "nextPageToken" not in served[-1]
    assert all(p["historyId"] == str(control.history_id(ALICE)) for p in served)
    got = [h["messagesAdded"][0]["message"]["id"] for p in served for h in p.get("history", [])]
    assert got == [m["id"] for m in inserted]
    # Nothing new: no empty page to page through.
    current = control.history_id(ALICE)
    assert history_pages(alice, current) == [{"historyId": str(current)}]


def test_one_record_can_both_add_and_remove_labels(control, alice):
    start = control.history_id(ALICE)
    message = control.insert_message(ALICE, label_ids=["INBOX", "UNREAD"])
    control.modify_labels(ALICE, message["id"], add=["STARRED"], remove=["UNREAD", "INBOX"], one_record=True)
    [_, relabel] = alice.users().history().list(userId="me", startHistoryId=str(start)).execute()["history"]
    now = {"id": message["id"], "threadId": message["threadId"], "labelIds": ["STARRED"]}
    assert relabel["labelsAdded"] == [{"message": now, "labelIds": ["STARRED"]}]
    assert relabel["labelsRemoved"] == [{"message": now, "labelIds": ["UNREAD", "INBOX"]}]
    # Asked for one kind of change, the record shows that part only.
    [only_removed] = alice.users().history().list(userId="me", startHistoryId=str(start),
                                                  historyTypes=["labelRemoved"]).execute()["history"]
    assert only_removed["id"] == relabel["id"] and "labelsAdded" not in only_removed
    assert only_removed["labelsRemoved"] == relabel["labelsRemoved"]
    for label in ("UNREAD", "STARRED"):  # a labelId filter finds it by a label added or removed
        found = alice.users().history().list(userId="me", startHistoryId=str(start), labelId=label).execute()
        assert relabel["id"] in [h["id"] for h in found["history"]]


def test_a_message_is_listed_before_messages_get_finds_it(control, alice):
    control.configure(message_visibility_delay_seconds=30)
    start = control.history_id(ALICE)
    message = control.insert_message(ALICE, label_ids=["INBOX"])
    [added] = alice.users().history().list(userId="me", startHistoryId=str(start)).execute()["history"]
    assert added["messagesAdded"][0]["message"]["id"] == message["id"]
    with pytest.raises(HttpError) as missing:
        alice.users().messages().get(userId="me", id=message["id"], format="metadata").execute()
    assert missing.value.resp.status == 404
    control.advance_clock(31)
    found = alice.users().messages().get(userId="me", id=message["id"], format="metadata").execute()
    assert found["id"] == message["id"]


def test_draft_versions_and_sent_drafts_are_listed_before_messages_get_finds_them_too(control, alice):
    """A saved draft version and a sent draft's message are new messages like any other: the same
    delay applies to them."""
    control.configure(message_visibility_delay_seconds=30)
    start = control.history_id(ALICE)

    def get(message):
        return alice.users().messages().get(userId="me", id=message["id"], format="minimal").execute()

    first = control.save_draft(ALICE, subject="v1")
    assert not_yet_found(lambda: get(first))
    control.advance_clock(31)
    assert get(first)["labelIds"] == ["DRAFT"]
    second = control.save_draft(ALICE, draft_id=first["draftId"], subject="v2")
    assert not_yet_found(lambda: get(second))
    control.advance_clock(31)
    assert get(second)["labelIds"] == ["DRAFT"]
    sent = control.send_draft(ALICE, first["draftId"])
    assert not_yet_found(lambda: get(sent))
    history = alice.users().history().list(userId="me", startHistoryId=str(start)).execute()["history"]
    listed = [entry["message"]["id"] for record in history for entry in record.get("messagesAdded", [])]
    assert listed == [first["id"], second["id"], sent["id"]]
    control.advance_clock(31)
    assert get(sent)["labelIds"] == ["SENT"]


def not_yet_found(call) -> bool:
    with pytest.raises(HttpError) as missing:
        call()
    return missing.value.resp.status == 404


def test_settings_are_validated(control):
    from mailwatch_devstack.gmail_sim import SimulatorControlError

    for bad in ({"messageVisibilityDelaySeconds": -1}, {"messageVisibilityDelaySeconds": True},
                {"historyLabelIds": "yes"}, {"emptyHistoryPages": 1}, {"batchPartsConcurrent": "no"}):
        with pytest.raises(SimulatorControlError) as refused:
            control._call("POST", "/_sim/config", bad)
        assert refused.value.status == 400


def test_drafts_are_recorded_as_gmail_records_them(control, alice):
    start = control.history_id(ALICE)
    draft = control.save_draft(ALICE, subject="Plans", body="first")
    saved = control.save_draft(ALICE, draft_id=draft["draftId"], subject="Plans", body="first, then more")
    assert saved["draftId"] == draft["draftId"] and saved["id"] != draft["id"]
    assert saved["threadId"] == draft["threadId"]
    sent = control.send_draft(ALICE, draft["draftId"])
    assert sent["labelIds"] == ["SENT"] and sent["threadId"] == draft["threadId"]
    assert sent["id"] not in (draft["id"], saved["id"])
    history = alice.users().history().list(userId="me", startHistoryId=str(start)).execute()["history"]
    changes = [(kind, entry["message"]["id"], entry["message"].get("labelIds"))
               for record in history for kind in ("messagesAdded", "messagesDeleted") for entry in record.get(kind, [])]
    # Each version is a new message with DRAFT; the previous one is deleted; sending adds a SENT
    # message and deletes the draft's (served now: the deleted ones have no labels to show).
    assert changes == [("messagesAdded", draft["id"], None), ("messagesAdded", saved["id"], None),
                       ("messagesDeleted", draft["id"], None), ("messagesAdded", sent["id"], ["SENT"]),
                       ("messagesDeleted", saved["id"], None)]
    got = alice.users().messages().get(userId="me", id=sent["id"], format="full").execute()
    assert got["labelIds"] == ["SENT"] and got["snippet"] == "first, then more"
    for gone in (draft["id"], saved["id"]):
        with pytest.raises(HttpError) as missing:
            alice.users().messages().get(userId="me", id=gone).execute()
        assert missing.value.resp.status == 404
    from mailwatch_devstack.gmail_sim import SimulatorControlError

    with pytest.raises(SimulatorControlError) as unknown:
        control.send_draft(ALICE, draft["draftId"])  # sent: the draft is gone
    assert unknown.value.status == 404


def test_a_draft_version_is_labelled_draft_only_while_it_lasts(control, alice):
    start = control.history_id(ALICE)
    draft = control.save_draft(ALICE, body="v1")
    [added] = alice.users().history().list(userId="me", startHistoryId=str(start)).execute()["history"]
    assert added["messagesAdded"][0]["message"]["labelIds"] == ["DRAFT"]
    assert alice.users().messages().get(userId="me", id=draft["id"], format="minimal").execute()["labelIds"] == ["DRAFT"]
