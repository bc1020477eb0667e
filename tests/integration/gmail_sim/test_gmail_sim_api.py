"""Gmail API conformance through google-api-python-client: profile, messages, labels, history."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from googleapiclient.errors import HttpError

from tests.integration.gmail_sim.support import ALICE, all_pages, history_pages

pytestmark = pytest.mark.integration


def error_of(exc: HttpError) -> dict:
    return json.loads(exc.content)["error"]


@pytest.fixture
def alice(control, gmail):
    control.create_mailbox(ALICE)
    return gmail.for_user(ALICE)


def test_profile(control, alice):
    control.insert_message(ALICE)
    profile = alice.users().getProfile(userId="me").execute()
    assert profile == {"emailAddress": ALICE, "messagesTotal": 1, "threadsTotal": 1,
                       "historyId": str(control.history_id(ALICE))}


def test_messages_list_paging_and_label_filter(control, alice):
    work = control.create_label(ALICE, "Work")
    ids = [control.insert_message(ALICE, label_ids=["INBOX", work] if i % 2 else ["INBOX"])["id"]
           for i in range(7)]
    control.insert_message(ALICE, label_ids=["TRASH"])
    seen = [m["id"] for page in all_pages(alice.users().messages().list, userId="me", maxResults=3)
            for m in page.get("messages", [])]
    assert seen == list(reversed(ids))  # newest first, TRASH excluded
    filtered = alice.users().messages().list(userId="me", labelIds=[work]).execute()
    assert [m["id"] for m in filtered["messages"]] == [ids[5], ids[3], ids[1]]
    assert filtered["resultSizeEstimate"] == 3
    with_trash = alice.users().messages().list(userId="me", includeSpamTrash=True).execute()
    assert len(with_trash["messages"]) == 8


def test_messages_list_refuses_a_label_id_the_user_does_not_have(control, alice):
    """Gmail answers 400 "Invalid label: <id>" (public reports: a label's name passed as its id),
    as users.watch does, rather than an empty list that reads as "no such messages"."""
    work = control.create_label(ALICE, "Work")
    control.insert_message(ALICE, label_ids=["INBOX", work])
    for wanted in (["INBOX", "Label_999"], ["Work"]):
        with pytest.raises(HttpError) as refused:
            alice.users().messages().list(userId="me", labelIds=wanted).execute()
        assert refused.value.resp.status == 400
        assert error_of(refused.value)["message"] == f"Invalid label: {wanted[-1]}"
        assert error_of(refused.value)["errors"][0]["reason"] == "invalidArgument"
    assert len(alice.users().messages().list(userId="me", labelIds=["INBOX", work]).execute()["messages"]) == 1


def test_messages_list_empty_mailbox(alice):
    assert alice.users().messages().list(userId="me").execute() == {"resultSizeEstimate": 0}


def test_messages_get_formats(control, alice):
    inserted = control.insert_message(ALICE, subject="Quarterly report", sender="boss@example.com",
                                      body="Numbers are up.", label_ids=["INBOX", "IMPORTANT"])
    minimal = alice.users().messages().get(userId="me", id=inserted["id"], format="minimal").execute()
    assert minimal["id"] == inserted["id"] and minimal["threadId"] == inserted["threadId"]
    assert minimal["labelIds"] == ["INBOX", "IMPORTANT"]
    assert minimal["historyId"] == str(inserted["historyId"])
    assert minimal["internalDate"].isdigit() and minimal["snippet"] == "Numbers are up."
    assert "payload" not in minimal
    metadata = alice.users().messages().get(userId="me", id=inserted["id"], format="metadata",
                                            metadataHeaders=["Subject", "From"]).execute()
    assert metadata["payload"]["headers"] == [{"name": "From", "value": "boss@example.com"},
                                              {"name": "Subject", "value": "Quarterly report"}]
    full = alice.users().messages().get(userId="me", id=inserted["id"]).execute()
    names = {h["name"] for h in full["payload"]["headers"]}
    assert {"Subject", "From", "To", "Date", "Message-ID"} <= names
    assert full["payload"]["body"]["size"] == len("Numbers are up.")


def test_messages_get_unknown_and_malformed_ids(alice):
    with pytest.raises(HttpError) as missing:
        alice.users().messages().get(userId="me", id="0123456789abcdef").execute()
    assert missing.value.resp.status == 404
    assert error_of(missing.value) == {
        "code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
        "errors": [{"message": "Requested entity was not found.", "domain": "global", "reason": "notFound"}]}
    with pytest.raises(HttpError) as malformed:
        alice.users().messages().get(userId="me", id="not-an-id!").execute()
    assert malformed.value.resp.status == 400


def test_labels_list(control, alice):
    work = control.create_label(ALICE, "Work")
    labels = alice.users().labels().list(userId="me").execute()["labels"]
    by_id = {label["id"]: label for label in labels}
    assert by_id["INBOX"]["type"] == "system"
    assert by_id[work]["name"] == "Work" and by_id[work]["type"] == "user"


# -- history -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("history_label_ids", [False, True])
def test_history_records_every_change_with_gmail_shapes(control, alice, history_label_ids):
    control.configure(history_label_ids=history_label_ids)
    start = control.history_id(ALICE)
    message = control.insert_message(ALICE, label_ids=["INBOX", "UNREAD"])
    control.remove_labels(ALICE, message["id"], ["UNREAD"])
    control.add_labels(ALICE, message["id"], ["STARRED"])
    control.delete_message(ALICE, message["id"])
    response = alice.users().history().list(userId="me", startHistoryId=str(start)).execute()
    history = response["history"]
    ids = [int(h["id"]) for h in history]
    assert ids == sorted(ids) and ids[0] > start and len(ids) == 4
    assert response["historyId"] == str(control.history_id(ALICE)) == history[-1]["id"]
    ref = {"id": message["id"], "threadId": message["threadId"]}
    # (With historyLabelIds on, the message is gone by the time the page is served: no labels
    # to give for it either.) A label change names the labels it changed.
    assert history[0] == {"id": history[0]["id"], "messages": [ref], "messagesAdded": [{"message": ref}]}
    assert history[1]["labelsRemoved"] == [{"message": ref, "labelIds": ["UNREAD"]}]
    assert history[2]["labelsAdded"] == [{"message": ref, "labelIds": ["STARRED"]}]
    assert history[3]["messagesDeleted"] == [{"message": ref}]
    assert all(h["messages"] == [ref] for h in history)


def test_history_nothing_new_returns_only_history_id(control, alice):
    current = control.history_id(ALICE)
    assert alice.users().history().list(userId="me", startHistoryId=str(current)).execute() == {
        "historyId": str(current)}


def test_history_paging(control, alice):
    start = control.history_id(ALICE)
    inserted = control.insert_messages([{"emailAddress": ALICE} for _ in range(25)])
    pages = history_pages(alice, start, maxResults=10)
    assert [len(p.get("history", [])) for p in pages] == [10, 10, 5]
    got = [h["messagesAdded"][0]["message"]["id"] for p in pages for h in p["history"]]
    assert got == [m["id"] for m in inserted]
    assert all(p["historyId"] == str(control.history_id(ALICE)) for p in pages)


def test_history_types_and_label_filters(control, alice):
    start = control.history_id(ALICE)
    a = control.insert_message(ALICE, label_ids=["INBOX"])
    b = control.insert_message(ALICE, label_ids=["SENT"])
    control.add_labels(ALICE, b["id"], ["STARRED"])
    control.delete_message(ALICE, a["id"])
    added = alice.users().history().list(userId="me", startHistoryId=str(start),
                                         historyTypes=["messageAdded"]).execute()["history"]
    assert [h["messagesAdded"][0]["message"]["id"] for h in added] == [a["id"], b["id"]]
    assert all(set(h) == {"id", "messages", "messagesAdded"} for h in added)
    two = alice.users().history().list(userId="me", startHistoryId=str(start),
                                       historyTypes=["labelAdded", "messageDeleted"]).execute()["history"]
    assert [("labelsAdded" in h, "messagesDeleted" in h) for h in two] == [(True, False), (False, True)]
    inbox = alice.users().history().list(userId="me", startHistoryId=str(start), labelId="INBOX").execute()
    assert [h["messages"][0]["id"] for h in inbox["history"]] == [a["id"], a["id"]]
    starred = alice.users().history().list(userId="me", startHistoryId=str(start), labelId="STARRED").execute()
    assert [h["messages"][0]["id"] for h in starred["history"]] == [b["id"]]


def test_expired_history_answers_404(control, alice):
    start = control.history_id(ALICE)
    first = control.insert_message(ALICE)
    control.insert_message(ALICE)
    control.expire_history(ALICE, first["historyId"])
    with pytest.raises(HttpError) as expired:
        alice.users().history().list(userId="me", startHistoryId=str(start)).execute()
    assert expired.value.resp.status == 404
    assert error_of(expired.value)["errors"][0]["reason"] == "notFound"
    assert error_of(expired.value)["status"] == "NOT_FOUND"
    # From the new floor on, history is still there.
    ok = alice.users().history().list(userId="me", startHistoryId=str(first["historyId"])).execute()
    assert len(ok["history"]) == 1


def test_history_older_than_a_week_expires_on_the_sim_clock(control, alice):
    start = control.history_id(ALICE)
    control.insert_message(ALICE)
    control.advance_clock(8 * 24 * 3600)
    with pytest.raises(HttpError) as expired:
        alice.users().history().list(userId="me", startHistoryId=str(start)).execute()
    assert expired.value.resp.status == 404


def test_start_below_mailbox_creation_is_404(control, alice):
    with pytest.raises(HttpError) as expired:
        alice.users().history().list(userId="me", startHistoryId="1").execute()
    assert expired.value.resp.status == 404


@pytest.mark.parametrize("params", [
    {"startHistoryId": "abc"},
    {"startHistoryId": "-5"},
    {"startHistoryId": "18446744073709551616"},
    {"startHistoryId": "{start}", "pageToken": "garbage"},
])
def test_history_bad_parameters_answer_400(control, alice, params):
    start = control.history_id(ALICE)
    params = {k: v.format(start=start) for k, v in params.items()}
    with pytest.raises(HttpError) as bad:
        alice.users().history().list(userId="me", **params).execute()
    assert bad.value.resp.status == 400
    error = error_of(bad.value)
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    assert error["errors"][0]["domain"] == "global"


def test_history_requires_start(alice):
    with pytest.raises(HttpError) as missing:
        alice.users().history().list(userId="me").execute()
    assert missing.value.resp.status == 400
    assert error_of(missing.value)["errors"][0]["reason"] == "required"


def test_unknown_query_parameter_answers_400(control, alice):
    request = alice.users().getProfile(userId="me")
    request.uri += "&bogus=1"
    with pytest.raises(HttpError) as bad:
        request.execute()
    assert bad.value.resp.status == 400 and "bogus" in error_of(bad.value)["message"]


def test_raw_garbage_gets_gmail_shaped_errors_not_tracebacks(sim):
    cases = [
        ("GET", "/gmail/v1/users/me/nothing-here", None, {}),
        ("GET", "/gmail/v1/users/me/profile", None, {}),
        ("POST", "/batch/gmail/v1", b"\x00\xff garbage", {"Content-Type": "multipart/mixed; boundary=x"}),
        ("POST", "/batch", b"{}", {"Content-Type": "application/json"}),
        ("POST", "/_sim/messages", b"not json", {}),
    ]
    for method, path, body, headers in cases:
        request = urllib.request.Request(sim.url + path, data=body, method=method, headers=headers)
        with pytest.raises(urllib.error.HTTPError) as failure:
            urllib.request.urlopen(request, timeout=10)
        with failure.value as response:
            payload = json.loads(response.read())
        assert 400 <= failure.value.code < 500, (path, payload)
        assert set(payload["error"]) >= {"code", "message", "errors", "status"}
        assert "Traceback" not in json.dumps(payload)
    token = urllib.request.Request(sim.url + "/token", data=b"grant_type=password", method="POST")
    with pytest.raises(urllib.error.HTTPError) as failure:
        urllib.request.urlopen(token, timeout=10)
    with failure.value as response:
        assert json.loads(response.read())["error"] == "unsupported_grant_type"
