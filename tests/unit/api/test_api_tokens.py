from __future__ import annotations

import base64
import json

import pytest

from mailwatch.api import tokens
from mailwatch.domain.errors import InvalidArgument, InvalidCursor


@pytest.mark.parametrize("sequence", [0, 1, 42, 2**40 + 7, 2**63 - 1])
def test_cursor_round_trip(sequence):
    cursor = tokens.encode_cursor(sequence)
    assert isinstance(cursor, bytes) and b"=" not in cursor
    assert tokens.decode_cursor(cursor) == sequence
    assert tokens.decode_cursor(cursor.decode()) == sequence


def test_cursors_are_opaque_urlsafe():
    cursor = tokens.encode_cursor(123456789)
    assert cursor.replace(b"-", b"").replace(b"_", b"").isalnum()


@pytest.mark.parametrize(
    "cursor",
    [
        b"",
        b"not base64!",
        b"AQ",  # right version, too short
        base64.urlsafe_b64encode(b"\x02" + b"\x00" * 8).rstrip(b"="),  # unknown version
        base64.urlsafe_b64encode(b"\x01" + b"\xff" * 8).rstrip(b"="),  # beyond bigint
        base64.urlsafe_b64encode(b"\x01" + b"\x00" * 9).rstrip(b"="),  # too long a record
        b"A" * 100,
    ],
)
def test_bad_cursors(cursor):
    with pytest.raises(InvalidCursor):
        tokens.decode_cursor(cursor)


def test_encode_cursor_range():
    with pytest.raises(ValueError):
        tokens.encode_cursor(-1)


def test_page_token_round_trip_and_binding():
    fingerprint = tokens.request_fingerprint("ListMailboxes", ["ACTIVE"])
    token = tokens.encode_page_token(["2024-01-01T00:00:00.000000+00:00", "abc"], fingerprint=fingerprint)
    assert tokens.decode_page_token(token, fingerprint=fingerprint) == ["2024-01-01T00:00:00.000000+00:00", "abc"]
    assert tokens.decode_page_token("", fingerprint=fingerprint) is None
    other = tokens.request_fingerprint("ListMailboxes", ["STOPPED"])
    with pytest.raises(InvalidArgument) as raised:
        tokens.decode_page_token(token, fingerprint=other)
    assert raised.value.violations[0].field == "page_token"
    assert "different parameters" in raised.value.violations[0].description


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "x" * 2000,
        base64.urlsafe_b64encode(b"[1,2]").decode(),
        base64.urlsafe_b64encode(json.dumps({"v": 99, "p": 1, "f": ""}).encode()).decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "ünïcode",
    ],
)
def test_bad_page_tokens(token):
    with pytest.raises(InvalidArgument) as raised:
        tokens.decode_page_token(token)
    assert [v.field for v in raised.value.violations] == ["page_token"]
