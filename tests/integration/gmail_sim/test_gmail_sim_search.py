"""users.messages.list's `q` through the real google-api-python-client: Gmail's search operators
select exactly the matching messages (spam and trash only when the query names them, paging
within the matches), and an operator the simulator cannot evaluate is a 400 naming it."""

from __future__ import annotations

import email.policy
import json
from email.message import EmailMessage

import pytest
from googleapiclient.errors import HttpError

from tests.integration.gmail_sim.support import ALICE, BOB

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


def _with_attachment() -> bytes:
    message = EmailMessage()
    message["From"] = "Carol <carol@example.com>"
    message["To"] = ALICE
    message["Subject"] = "Signed contract"
    message.set_content("The contract is attached.")
    message.add_attachment(b"%PDF-1.4 contract", maintype="application", subtype="pdf", filename="contract.pdf")
    return message.as_bytes(policy=email.policy.SMTP)


@pytest.fixture
def mailbox(control, gmail):
    control.create_mailboxes([ALICE, BOB])
    now_ms = int(control.now() * 1000)
    work = control.create_label(ALICE, "Work Stuff")

    def add(name, **kwargs):
        kwargs.setdefault("label_ids", ["INBOX"])
        return name, control.insert_message(ALICE, **kwargs)["id"]

    ids = dict([
        add("invoice", subject="Invoice 42", sender="billing@shop.test", body="Please pay by Friday.",
            label_ids=["INBOX", "UNREAD"], internal_date=now_ms - 10 * DAY_MS),
        add("lunch", subject="Lunch?", sender="bob@example.com", body="Pizza or sushi today",
            label_ids=["INBOX", "STARRED", work], internal_date=now_ms - 1 * DAY_MS),
        add("sent", subject="Re: Lunch?", sender=ALICE, to="bob@example.com", body="Sushi.",
            label_ids=["SENT"], internal_date=now_ms - DAY_MS // 2),
        add("trashed", subject="Old invoice", sender="billing@shop.test", body="Paid.", label_ids=["TRASH"],
            internal_date=now_ms - 400 * DAY_MS),
        add("spam", subject="You won", sender="prize@spam.test", body="Claim your invoice now", label_ids=["SPAM"],
            internal_date=now_ms - 2 * DAY_MS),
    ])
    ids["contract"] = control.insert_raw_message(ALICE, _with_attachment(), label_ids=["INBOX", "UNREAD"],
                                                 internal_date=now_ms - 3 * DAY_MS)["id"]
    return gmail.for_user(ALICE), ids


def _search(service, q, **params) -> list[str]:
    found, token = [], None
    while True:
        page = service.users().messages().list(userId="me", q=q, pageToken=token, **params).execute()
        found += [m["id"] for m in page.get("messages", [])]
        token = page.get("nextPageToken")
        if not token:
            return found


@pytest.mark.parametrize(("q", "expected"), [
    ("from:billing@shop.test", {"invoice"}),
    ("to:bob@example.com", {"sent"}),
    ("subject:lunch", {"lunch", "sent"}),
    ('"pay by friday"', {"invoice"}),
    ("sushi", {"lunch", "sent"}),
    ("sushi -in:sent", {"lunch"}),
    ("label:work-stuff", {"lunch"}),
    ("in:sent", {"sent"}),
    ("is:unread", {"invoice", "contract"}),
    ("is:starred OR has:attachment", {"lunch", "contract"}),
    ("{from:bob from:carol}", {"lunch", "contract"}),
    ("newer_than:2d", {"lunch", "sent"}),
    ("older_than:5d", {"invoice"}),
    ("invoice", {"invoice"}),  # spam and trash stay out unless the query names them
    ("invoice in:anywhere", {"invoice", "trashed", "spam"}),
    ("in:trash", {"trashed"}),
    ("in:spam", {"spam"}),
    ("older_than:1y in:trash", {"trashed"}),
    ("(invoice OR contract) is:unread", {"invoice", "contract"}),
])
def test_the_query_selects_exactly_the_matching_messages(mailbox, q, expected):
    service, ids = mailbox
    names = {v: k for k, v in ids.items()}
    assert {names[i] for i in _search(service, q)} == expected


def test_include_spam_trash_widens_the_search_and_pages_stay_within_the_matches(mailbox):
    service, ids = mailbox
    assert set(_search(service, "invoice", includeSpamTrash=True)) == {ids["invoice"], ids["trashed"], ids["spam"]}
    paged = _search(service, "-from:nobody", maxResults=2)
    assert len(paged) == 4 and len(set(paged)) == 4 and ids["trashed"] not in paged
    first = service.users().messages().list(userId="me", q="in:inbox", maxResults=2).execute()
    assert first["resultSizeEstimate"] == 3 and first["nextPageToken"]


def test_an_operator_the_simulator_cannot_evaluate_is_refused_by_name(mailbox):
    service, _ = mailbox
    for q, named in (("filename:contract.pdf", "filename:"), ("is:muted invoice", "is:muted"), ("(invoice", "(")):
        with pytest.raises(HttpError) as refused:
            service.users().messages().list(userId="me", q=q).execute()
        error = json.loads(refused.value.content)["error"]
        assert refused.value.resp.status == 400 and error["status"] == "INVALID_ARGUMENT", q
        assert f"'{named}" in error["message"] and error["errors"][0]["reason"] == "invalidArgument", error
