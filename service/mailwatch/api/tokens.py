"""Opaque stream cursors and page tokens.

Both are urlsafe base64 (no padding) of a small versioned record, so their
format can change without breaking tokens already handed out, and clients
cannot be tempted to parse them. Neither is a secret nor signed: every query
they feed is still scoped to the caller's tenant, so a forged token can only
move the caller around its own data.

Cursors (`ChangeEvent.cursor`, `Heartbeat.cursor`, `StreamChangesRequest.cursor`)
hold the change log's `sequence`:

    cursor = encode_cursor(event.sequence)           # bytes
    sequence = decode_cursor(request.cursor)         # raises InvalidCursor

Page tokens hold the last position of the previous page plus a fingerprint of
the request's other parameters, because AIP-158 requires a token to be
rejected when the rest of the request changed:

    fingerprint = request_fingerprint(tuple(states))
    token = encode_page_token([last.created.isoformat(), str(last.id)], fingerprint=fingerprint)
    position = decode_page_token(request.page_token, fingerprint=fingerprint)  # raises InvalidArgument
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from typing import Any

from mailwatch.domain.errors import FieldViolation, InvalidArgument, InvalidCursor

CURSOR_VERSION = 1
PAGE_TOKEN_VERSION = 1

_CURSOR_RECORD = struct.Struct(">BQ")  # version, sequence
_MAX_CURSOR_BYTES = 64
_MAX_PAGE_TOKEN_CHARS = 1024


def encode_cursor(sequence: int) -> bytes:
    """The opaque cursor for a change-log sequence number (>= 0)."""
    if not 0 <= sequence < 2**63:
        raise ValueError(f"sequence out of range: {sequence}")
    return base64.urlsafe_b64encode(_CURSOR_RECORD.pack(CURSOR_VERSION, sequence)).rstrip(b"=")


def decode_cursor(cursor: bytes | str) -> int:
    """The sequence number in a cursor; InvalidCursor when it is not one of ours."""
    if isinstance(cursor, str):
        cursor = cursor.encode("ascii", "replace")
    if not cursor or len(cursor) > _MAX_CURSOR_BYTES:
        raise InvalidCursor("cursor is not a valid mailwatch cursor")
    try:
        raw = _b64decode(cursor)
    except (binascii.Error, ValueError):
        raise InvalidCursor("cursor is not a valid mailwatch cursor") from None
    if not raw or raw[0] != CURSOR_VERSION or len(raw) != _CURSOR_RECORD.size:
        raise InvalidCursor("cursor is not a valid mailwatch cursor (unknown version or length)")
    _, sequence = _CURSOR_RECORD.unpack(raw)
    if sequence >= 2**63:
        raise InvalidCursor("cursor is not a valid mailwatch cursor (out of range)")
    return sequence


def request_fingerprint(*parts: Any) -> str:
    """A short digest of the request parameters a page token is bound to."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_page_token(position: Any, *, fingerprint: str = "") -> str:
    """An opaque page token for a JSON-serialisable `position` (e.g. [created, id])."""
    record = {"v": PAGE_TOKEN_VERSION, "p": position, "f": fingerprint}
    raw = json.dumps(record, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_page_token(token: str, *, fingerprint: str = "", field: str = "page_token") -> Any:
    """The position in a page token; None for the empty token (first page).

    Raises InvalidArgument (one violation on `field`) when the token is not
    ours or was issued for a request with other parameters.
    """
    if not token:
        return None

    def invalid(description: str) -> InvalidArgument:
        return InvalidArgument([FieldViolation(field, description)])

    if len(token) > _MAX_PAGE_TOKEN_CHARS:
        raise invalid("page token is not valid")
    try:
        record = json.loads(_b64decode(token.encode("ascii")))
    except (UnicodeError, binascii.Error, ValueError):
        raise invalid("page token is not valid") from None
    if not isinstance(record, dict) or record.get("v") != PAGE_TOKEN_VERSION or "p" not in record:
        raise invalid("page token is not valid")
    if record.get("f", "") != fingerprint:
        raise invalid("page token was issued for a request with different parameters")
    return record["p"]


def _b64decode(data: bytes) -> bytes:
    if not data.replace(b"-", b"").replace(b"_", b"").isalnum():
        raise ValueError("not urlsafe base64")
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))
