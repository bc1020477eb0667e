"""Pure decoding of Gmail push notifications and Pub/Sub push envelopes. No I/O.

Gmail publishes `{"emailAddress": "...", "historyId": "..."}` as the Pub/Sub
message data (over gRPC pull that is the raw JSON bytes; in a push request or a
REST pull it is the same bytes in base64). Anything that does not fit is a
`MalformedNotification` with a stable, low-cardinality `reason` that is safe to
use as a metric label and is stored next to the (truncated) data.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mailwatch.domain import addresses
from mailwatch.domain.text import storable_text
from mailwatch.store.models import MALFORMED_DATA_MAX_BYTES

# Gmail's payload is well under 1 KiB; anything near this is not from Gmail.
MAX_DATA_BYTES = 64 * 1024
# History ids are stored as Postgres bigint.
MAX_HISTORY_ID = 2**63 - 1

_DIGITS = re.compile(r"[0-9]{1,19}")


class MalformedReason(enum.StrEnum):
    TOO_LARGE = "too_large"
    NOT_BASE64 = "not_base64"
    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_EMAIL_ADDRESS = "missing_email_address"
    BAD_EMAIL_ADDRESS = "bad_email_address"
    MISSING_HISTORY_ID = "missing_history_id"
    BAD_HISTORY_ID = "bad_history_id"
    BAD_ENVELOPE = "bad_envelope"  # a push request body that is not the Pub/Sub push format


class MalformedNotification(ValueError):
    def __init__(self, reason: MalformedReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason


@dataclass(frozen=True)
class Notification:
    """One decoded Gmail notification: `email_address` is lower-cased."""

    email_address: str
    history_id: int


@dataclass(frozen=True)
class PushMessage:
    """The parts of a Pub/Sub push request ingest uses.

    `data` is the already base64-decoded message data, or None when the
    envelope was fine but the data was not base64 (`data_error` says so).
    """

    message_id: str | None
    data: bytes | None
    attributes: dict[str, str] = field(default_factory=dict)
    subscription: str | None = None
    data_error: MalformedReason | None = None
    raw_data: bytes = b""  # what arrived in the data field, for the malformed record


def truncate(data: bytes | None) -> bytes | None:
    """What is kept of a malformed message's data for inspection."""
    return None if data is None else bytes(data[:MALFORMED_DATA_MAX_BYTES])


def parse_history_id(value: object) -> int:
    """Gmail sends a numeric string; a JSON number is accepted too. Nothing else is."""
    if isinstance(value, bool):  # bool is an int subclass: true is not history id 1
        raise MalformedNotification(MalformedReason.BAD_HISTORY_ID, "boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    else:
        raise MalformedNotification(MalformedReason.BAD_HISTORY_ID, type(value).__name__)
    if not 0 < number <= MAX_HISTORY_ID:
        raise MalformedNotification(MalformedReason.BAD_HISTORY_ID, "out of range")
    return number


def parse_email_address(value: object) -> str:
    if not isinstance(value, str):
        raise MalformedNotification(MalformedReason.BAD_EMAIL_ADDRESS, type(value).__name__)
    if not addresses.is_notified(value) or storable_text(value) != value:
        raise MalformedNotification(MalformedReason.BAD_EMAIL_ADDRESS, "not an address")
    return addresses.normalize(value)


def decode_notification(data: bytes) -> Notification:
    """Decode the Pub/Sub message data Gmail published (raw JSON bytes)."""
    if len(data) > MAX_DATA_BYTES:
        raise MalformedNotification(MalformedReason.TOO_LARGE, f"{len(data)} bytes")
    try:
        payload = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedNotification(MalformedReason.NOT_JSON) from None
    if not isinstance(payload, dict):
        raise MalformedNotification(MalformedReason.NOT_AN_OBJECT, type(payload).__name__)
    if "emailAddress" not in payload:
        raise MalformedNotification(MalformedReason.MISSING_EMAIL_ADDRESS)
    if "historyId" not in payload:
        raise MalformedNotification(MalformedReason.MISSING_HISTORY_ID)
    return Notification(
        email_address=parse_email_address(payload["emailAddress"]),
        history_id=parse_history_id(payload["historyId"]),
    )


def decode_base64(text: object) -> bytes:
    """Pub/Sub's JSON encoding of bytes: standard base64 (urlsafe tolerated)."""
    if not isinstance(text, str):
        raise MalformedNotification(MalformedReason.NOT_BASE64, type(text).__name__)
    # 4/3 expansion: refuse to decode what would exceed the data limit anyway.
    if len(text) > (MAX_DATA_BYTES * 4) // 3 + 4:
        raise MalformedNotification(MalformedReason.TOO_LARGE, f"{len(text)} base64 characters")
    try:
        compact = text.strip().encode("ascii")
        if b"-" in compact or b"_" in compact:
            return base64.b64decode(compact, altchars=b"-_", validate=True)
        return base64.b64decode(compact, validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise MalformedNotification(MalformedReason.NOT_BASE64) from None


def decode_push_envelope(body: bytes) -> PushMessage:
    """Parse a Pub/Sub push request body.

    Raises `MalformedNotification(BAD_ENVELOPE)` when the body is not the push
    format at all; a well-formed envelope whose data is not base64 comes back
    with `data=None` and `data_error` set, so its message id is still recorded.
    """
    try:
        envelope = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedNotification(MalformedReason.BAD_ENVELOPE, "not JSON") from None
    message = envelope.get("message") if isinstance(envelope, dict) else None
    if not isinstance(message, dict):
        raise MalformedNotification(MalformedReason.BAD_ENVELOPE, "no message object")
    message_id = message.get("messageId", message.get("message_id"))
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict):
        attributes = {"_invalid": str(attributes)[:200]}
    attributes = attributes_of(attributes)
    subscription = envelope.get("subscription")
    raw = message.get("data", "")
    raw_bytes = raw.encode("utf-8", "replace") if isinstance(raw, str) else json.dumps(raw).encode()
    try:
        data = decode_base64(raw)
        error = None
    except MalformedNotification as exc:
        data, error = None, exc.reason
    return PushMessage(
        message_id=storable_text(message_id) if message_id is not None else None,
        data=data,
        attributes=attributes,
        subscription=subscription if isinstance(subscription, str) else None,
        data_error=error,
        raw_data=truncate(raw_bytes) or b"",
    )


def collapse(notifications: Iterable[Notification]) -> dict[str, int]:
    """Highest notified history id per address: a burst becomes one write per mailbox."""
    latest: dict[str, int] = {}
    for notification in notifications:
        current = latest.get(notification.email_address)
        if current is None or notification.history_id > current:
            latest[notification.email_address] = notification.history_id
    return latest


def attributes_of(attributes: Mapping[str, str] | None) -> dict[str, str]:
    """Pub/Sub attributes as a plain dict Postgres stores as jsonb (protobuf maps are not dicts)."""
    return {storable_text(k): storable_text(v) for k, v in (attributes or {}).items()}
