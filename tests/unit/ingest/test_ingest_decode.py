"""Decoding and validation of Gmail notifications and Pub/Sub push envelopes (pure)."""

from __future__ import annotations

import base64
import json

import pytest

from mailwatch.ingest.decode import (
    MAX_DATA_BYTES,
    MalformedNotification,
    MalformedReason,
    Notification,
    collapse,
    decode_base64,
    decode_notification,
    decode_push_envelope,
)
from mailwatch.ingest.record import Received, classify
from mailwatch.store.models import MALFORMED_DATA_MAX_BYTES


def _json(payload) -> bytes:
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    "data, expected",
    [
        (_json({"emailAddress": "user@example.com", "historyId": "9876"}), Notification("user@example.com", 9876)),
        (_json({"emailAddress": "user@example.com", "historyId": 9876}), Notification("user@example.com", 9876)),
        (_json({"emailAddress": "User@Example.COM", "historyId": "1"}), Notification("user@example.com", 1)),
        (_json({"emailAddress": "a@b", "historyId": str(2**63 - 1)}), Notification("a@b", 2**63 - 1)),
        # extra fields are ignored (Gmail may add some)
        (_json({"emailAddress": "a@b.c", "historyId": "5", "extra": [1, 2]}), Notification("a@b.c", 5)),
        (b'  {"historyId": "7", "emailAddress": "x@y.z"}\n', Notification("x@y.z", 7)),
    ],
)
def test_decodes_gmail_payload(data, expected):
    assert decode_notification(data) == expected


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", MalformedReason.NOT_JSON),
        (b"not json", MalformedReason.NOT_JSON),
        (b"\xff\xfe\x00garbage", MalformedReason.NOT_JSON),
        (base64.b64encode(_json({"emailAddress": "a@b.c", "historyId": "1"})), MalformedReason.NOT_JSON),
        (b"[" * 100000 + b"]" * 100000, MalformedReason.TOO_LARGE),
        (b"[" * 30000 + b"]" * 30000, MalformedReason.NOT_JSON),  # deep nesting, under the size limit
        (_json([1, 2]), MalformedReason.NOT_AN_OBJECT),
        (_json("a@b.c"), MalformedReason.NOT_AN_OBJECT),
        (_json(None), MalformedReason.NOT_AN_OBJECT),
        (_json({"historyId": "1"}), MalformedReason.MISSING_EMAIL_ADDRESS),
        (_json({"emailAddress": "a@b.c"}), MalformedReason.MISSING_HISTORY_ID),
        (_json({}), MalformedReason.MISSING_EMAIL_ADDRESS),
        (_json({"emailAddress": None, "historyId": "1"}), MalformedReason.BAD_EMAIL_ADDRESS),
        (_json({"emailAddress": 42, "historyId": "1"}), MalformedReason.BAD_EMAIL_ADDRESS),
        (_json({"emailAddress": "", "historyId": "1"}), MalformedReason.BAD_EMAIL_ADDRESS),
        (_json({"emailAddress": "no-at-sign", "historyId": "1"}), MalformedReason.BAD_EMAIL_ADDRESS),
        (_json({"emailAddress": "a@b@c", "historyId": "1"}), MalformedReason.BAD_EMAIL_ADDRESS),
        (_json({"emailAddress": "a b@c.d", "historyId": "1"}), MalformedReason.BAD_EMAIL_ADDRESS),
        (_json({"emailAddress": "a\u0000@c.d", "historyId": "1"}), MalformedReason.BAD_EMAIL_ADDRESS),
        (_json({"emailAddress": "@c.d", "historyId": "1"}), MalformedReason.BAD_EMAIL_ADDRESS),
        (_json({"emailAddress": "x" * 250 + "@c.de", "historyId": "1"}), MalformedReason.BAD_EMAIL_ADDRESS),
        (_json({"emailAddress": "a@b.c", "historyId": None}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": True}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": 1.5}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": 12.0}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": "12.0"}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": "abc"}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": ""}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": " 12"}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": "+12"}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": "-12"}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": -12}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": 0}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": "\u0661\u0662"}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": 2**63}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": "9" * 40}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": ["1"]}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": {"v": 1}}), MalformedReason.BAD_HISTORY_ID),
        (_json({"emailAddress": "a@b.c", "historyId": "1", "pad": "x" * MAX_DATA_BYTES}), MalformedReason.TOO_LARGE),
    ],
)
def test_rejects_malformed_payloads(data, reason):
    with pytest.raises(MalformedNotification) as caught:
        decode_notification(data)
    assert caught.value.reason is reason


@pytest.mark.parametrize(
    "text, expected",
    [
        (base64.b64encode(b"hello").decode(), b"hello"),
        (base64.urlsafe_b64encode(b"\xfb\xff\xfe").decode(), b"\xfb\xff\xfe"),
        ("", b""),
    ],
)
def test_base64(text, expected):
    assert decode_base64(text) == expected


@pytest.mark.parametrize("text", ["not base64!", "abc", "aGVsbG8=extra", "é", 12, None, ["aGk="]])
def test_base64_rejects(text):
    with pytest.raises(MalformedNotification) as caught:
        decode_base64(text)
    assert caught.value.reason is MalformedReason.NOT_BASE64


def test_base64_rejects_oversize_before_decoding():
    with pytest.raises(MalformedNotification) as caught:
        decode_base64("A" * (MAX_DATA_BYTES * 2))
    assert caught.value.reason is MalformedReason.TOO_LARGE


def _envelope(data, **message) -> bytes:
    return _json({"message": {"data": data, "messageId": "m-1", "attributes": {"k": "v"},
                              "publishTime": "2024-01-01T00:00:00Z", **message},
                  "subscription": "projects/p/subscriptions/s"})


def test_push_envelope():
    payload = _json({"emailAddress": "a@b.c", "historyId": "3"})
    message = decode_push_envelope(_envelope(base64.b64encode(payload).decode()))
    assert message.data == payload
    assert message.message_id == "m-1"
    assert message.attributes == {"k": "v"}
    assert message.subscription == "projects/p/subscriptions/s"
    assert message.data_error is None


def test_push_envelope_with_bad_data_keeps_the_message_id():
    message = decode_push_envelope(_envelope("%%% not base64"))
    assert message.data is None
    assert message.data_error is MalformedReason.NOT_BASE64
    assert message.message_id == "m-1"
    assert message.raw_data == b"%%% not base64"


@pytest.mark.parametrize(
    "body",
    [b"", b"nope", _json([]), _json({"message": "x"}), _json({"subscription": "s"}), _json({"message": None})],
)
def test_push_envelope_rejects_non_push_bodies(body):
    with pytest.raises(MalformedNotification) as caught:
        decode_push_envelope(body)
    assert caught.value.reason is MalformedReason.BAD_ENVELOPE


def test_collapse_keeps_the_highest_history_id_per_address():
    notifications = [
        Notification("a@x", 5),
        Notification("b@x", 1),
        Notification("a@x", 9),
        Notification("a@x", 7),  # out of order: lower after higher
        Notification("b@x", 1),  # duplicate
    ]
    assert collapse(notifications) == {"a@x": 9, "b@x": 1}


def test_collapse_a_burst_is_one_entry():
    assert collapse(Notification("a@x", i) for i in range(1, 501)) == {"a@x": 500}
    assert collapse([]) == {}


def test_classify_splits_good_and_malformed_and_truncates_data():
    good = _json({"emailAddress": "A@x.y", "historyId": "3"})
    huge = b"z" * (MAX_DATA_BYTES + 1)
    decoded, malformed = classify(
        [
            Received("1", good),
            Received("2", b"garbage", {"a": "b"}),
            Received("3", huge),
            Received("4", None, error=MalformedReason.NOT_BASE64, raw_data=b"%%"),
        ],
        source="projects/p/subscriptions/s",
    )
    assert decoded == [Notification("a@x.y", 3), None, None, None]
    assert [(m.pubsub_message_id, m.reason) for m in malformed] == [
        ("2", "not_json"), ("3", "too_large"), ("4", "not_base64"),
    ]
    assert malformed[0].attributes == {"a": "b"}
    assert malformed[0].source == "projects/p/subscriptions/s"
    assert len(malformed[1].data) == MALFORMED_DATA_MAX_BYTES
    assert malformed[2].data == b"%%"
