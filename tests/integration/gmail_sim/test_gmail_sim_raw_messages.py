"""Messages inserted from their RFC 822 source, read as Gmail serves them: the MIME tree of
format=full with attachment ids (MessagePart / MessagePartBody), users.messages.attachments.get
(large attachments too), format=raw byte for byte."""

from __future__ import annotations

import base64
import email.policy
import json
import os
from email.message import EmailMessage

import pytest
from googleapiclient.errors import HttpError

from tests.integration.gmail_sim.support import ALICE, BOB

pytestmark = pytest.mark.integration

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40
LARGE = os.urandom(12 * 1024 * 1024 + 5)  # past 12 MB


def b64url_decode(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def source(*, large: bool = False) -> bytes:
    message = EmailMessage()
    message["From"] = "Bob <bob@example.com>"
    message["To"] = ALICE
    message["Subject"] = "Quarterly report"
    message["Message-ID"] = "<report-1@example.com>"
    message["Date"] = "Mon, 07 Dec 2026 09:00:00 +0000"
    message.set_content("Here is the report.\nRegards, Bob")
    message.add_alternative("<p>Here is the <b>report</b>.</p>", subtype="html")
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
    if large:
        message.add_attachment(LARGE, maintype="application", subtype="octet-stream", filename="data.bin")
    return message.as_bytes(policy=email.policy.SMTP)


@pytest.fixture
def alice(control, gmail):
    control.create_mailboxes([ALICE, BOB])
    return gmail.for_user(ALICE)


def test_full_format_is_the_mime_tree_and_attachments_are_served(control, alice):
    raw = source()
    inserted = control.insert_raw_message(ALICE, raw, label_ids=["INBOX"])
    full = alice.users().messages().get(userId="me", id=inserted["id"], format="full").execute()
    assert full["snippet"] == "Here is the report. Regards, Bob" and full["sizeEstimate"] == len(raw)
    payload = full["payload"]
    assert (payload["partId"], payload["mimeType"], payload["filename"]) == ("", "multipart/mixed", "")
    assert {"name": "Subject", "value": "Quarterly report"} in payload["headers"]
    assert payload["body"] == {"size": 0} and "data" not in payload["body"]
    alternative, pdf = payload["parts"]
    assert (alternative["partId"], alternative["mimeType"]) == ("0", "multipart/alternative")
    plain, html = alternative["parts"]
    assert (plain["partId"], plain["mimeType"], html["partId"], html["mimeType"]) == \
           ("0.0", "text/plain", "0.1", "text/html")
    assert b64url_decode(plain["body"]["data"]) == b"Here is the report.\r\nRegards, Bob\r\n"
    assert plain["body"]["size"] == len(b64url_decode(plain["body"]["data"]))
    assert {"name": "Content-Type", "value": 'text/plain; charset="utf-8"'} in plain["headers"]
    # The attachment: a file name, an attachment id, its size, and no inline data.
    assert (pdf["partId"], pdf["mimeType"], pdf["filename"]) == ("1", "application/pdf", "report.pdf")
    assert set(pdf["body"]) == {"attachmentId", "size"} and pdf["body"]["size"] == len(PDF)
    served = alice.users().messages().attachments().get(
        userId="me", messageId=inserted["id"], id=pdf["body"]["attachmentId"]).execute()
    assert served["size"] == len(PDF) and b64url_decode(served["data"]) == PDF

    # format=raw is the source as inserted, metadata its headers.
    fetched = alice.users().messages().get(userId="me", id=inserted["id"], format="raw").execute()
    assert b64url_decode(fetched["raw"]) == raw and "payload" not in fetched
    metadata = alice.users().messages().get(userId="me", id=inserted["id"], format="metadata",
                                            metadataHeaders=["Subject", "From"]).execute()
    assert metadata["payload"]["headers"] == [{"name": "From", "value": "Bob <bob@example.com>"},
                                              {"name": "Subject", "value": "Quarterly report"}]
    assert metadata["payload"]["mimeType"] == "multipart/mixed"
    assert control.counters()["calls"][ALICE]["users.messages.attachments.get"] == 1


def test_a_large_attachment_is_served_whole(control, alice):
    inserted = control.insert_raw_message(ALICE, source(large=True))
    full = alice.users().messages().get(userId="me", id=inserted["id"], format="full").execute()
    large = full["payload"]["parts"][2]
    assert large["filename"] == "data.bin" and large["body"]["size"] == len(LARGE)
    served = alice.users().messages().attachments().get(
        userId="me", messageId=inserted["id"], id=large["body"]["attachmentId"]).execute()
    assert served["size"] == len(LARGE) and b64url_decode(served["data"]) == LARGE


def test_attachment_ids_are_the_messages_own(control, gmail, alice):
    first = control.insert_raw_message(ALICE, source())
    second = control.insert_raw_message(ALICE, source())
    attachment = alice.users().messages().get(userId="me", id=first["id"]).execute()["payload"]["parts"][1]["body"]
    for message_id, attachment_id in ((second["id"], attachment["attachmentId"]), (first["id"], "ANGjdJnope"),
                                      (first["id"], "garbage")):
        with pytest.raises(HttpError) as refused:
            alice.users().messages().attachments().get(userId="me", messageId=message_id, id=attachment_id).execute()
        assert refused.value.resp.status == 400
        error = json.loads(refused.value.content)["error"]
        assert error["message"] == "Invalid attachment token" and error["errors"][0]["reason"] == "invalidArgument"
    with pytest.raises(HttpError) as missing:
        alice.users().messages().attachments().get(
            userId="me", messageId="ffffffff", id=attachment["attachmentId"]).execute()
    assert missing.value.resp.status == 404
    # Another user's token cannot read it, and the metadata scope may not read attachments at all.
    bob = gmail.for_user(BOB)
    with pytest.raises(HttpError) as other:
        bob.users().messages().attachments().get(userId="me", messageId=first["id"], id=attachment["attachmentId"]).execute()
    assert other.value.resp.status == 404
    metadata_only = gmail.service(gmail.user_credentials(ALICE, scopes=["https://www.googleapis.com/auth/gmail.metadata"]))
    with pytest.raises(HttpError) as scoped:
        metadata_only.users().messages().attachments().get(
            userId="me", messageId=first["id"], id=attachment["attachmentId"]).execute()
    assert scoped.value.resp.status == 403


def test_raw_inserts_are_validated(control, alice):
    from mailwatch_devstack.gmail_sim import SimulatorControlError

    for item in ({"raw": "!!!"}, {"raw": ""}, {"raw": base64.urlsafe_b64encode(b"Subject: x\r\n\r\nhi").decode(),
                                               "subject": "also fields"}):
        with pytest.raises(SimulatorControlError) as rejected:
            control.insert_messages([{"emailAddress": ALICE, **item}])
        assert rejected.value.status == 400
