"""Gmail message resources -> domain messages (pure parsing)."""

from __future__ import annotations

import base64

from mailwatch.gmail.messages import message_from_resource, metadata_from_resource


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")  # Gmail often omits padding


RESOURCE = {
    "id": "18c2f1a3b4d5e6f7",
    "threadId": "18c2f1a3b4d5e6f0",
    "labelIds": ["INBOX", "UNREAD"],
    "snippet": "See attached",
    "sizeEstimate": 48213,
    "internalDate": "1732872000123",
    "payload": {
        "partId": "",
        "mimeType": "multipart/mixed",
        "headers": [{"name": "Subject", "value": "Invoice"}, {"name": "From", "value": "a@example.com"}],
        "body": {"size": 0},
        "parts": [
            {"partId": "0", "mimeType": "text/plain", "filename": "", "headers": [],
             "body": {"size": 5, "data": b64url(b"hi \xe2\x9c\x93")}},
            {"partId": "1", "mimeType": "application/pdf", "filename": "invoice.pdf", "headers": [],
             "body": {"size": 40000, "attachmentId": "ANGjdJ8"}},
        ],
    },
}


def test_metadata_keeps_header_order_and_converts_numbers():
    metadata = metadata_from_resource(RESOURCE)
    assert metadata.headers == (("Subject", "Invoice"), ("From", "a@example.com"))
    assert (metadata.snippet, metadata.size_estimate, metadata.internal_date_ms) == ("See attached", 48213, 1732872000123)
    assert not metadata.missing
    assert metadata_from_resource({"id": "1"}).internal_date_ms is None


def test_full_message_decodes_unpadded_bodies_and_keeps_attachment_ids():
    message = message_from_resource(RESOURCE, "full")
    parts = list(message.payload.walk())
    assert [p.part_id for p in parts] == ["", "0", "1"]
    assert parts[1].body == "hi ✓".encode()
    assert parts[2].body == b"" and parts[2].attachment_id == "ANGjdJ8" and parts[2].filename == "invoice.pdf"
    assert message.raw is None


def test_raw_message_decodes_the_source():
    source = b"Subject: x\r\n\r\n" + bytes(range(256))
    message = message_from_resource({"id": "1", "threadId": "1", "raw": b64url(source)}, "raw")
    assert message.raw == source and message.payload is None
    assert message.metadata.headers == (("Subject", "x"),)


def test_raw_message_headers_come_from_the_source_unfolded_and_storable():
    source = (b"From: a@example.com\r\nSubject: a folded\r\n\tsubject\r\nX-Nul: a\x00b\r\n"
              b"Content-Type: text/plain\r\n\r\nSubject: not a header\r\n")
    message = message_from_resource({"id": "1", "threadId": "1", "raw": b64url(source)}, "raw")
    assert message.metadata.headers == (("From", "a@example.com"), ("Subject", "a folded\tsubject"),
                                        ("X-Nul", "a\ufffdb"), ("Content-Type", "text/plain"))


def test_metadata_text_is_made_storable():
    # Real mail can carry a NUL or a lone surrogate in a header; Postgres' jsonb holds neither.
    resource = {"id": "m1", "snippet": "hi\x00there\ud83d", "payload": {"headers": [
        {"name": "Subject", "value": "Invoice\x00attached"}, {"name": "X-\x00", "value": "\udc00"},
        {"name": "From", "value": "Ünïcode 😀 <a@example.com>"},
    ]}}
    metadata = metadata_from_resource(resource)
    assert metadata.headers == (
        ("Subject", "Invoice\ufffdattached"), ("X-\ufffd", "?"), ("From", "Ünïcode 😀 <a@example.com>"),
    )
    assert metadata.snippet == "hi\ufffdthere?"
    assert message_from_resource({**resource, "payload": {"headers": resource["payload"]["headers"]}},
                                 "metadata").metadata == metadata
