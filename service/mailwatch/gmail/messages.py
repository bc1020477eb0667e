"""Gmail message resources (users.messages.get JSON) -> domain messages. Pure parsing.

Gmail encodes bodies and the raw source as base64url, sometimes without
padding; `internalDate` is milliseconds since the epoch as a string. In
format=raw Gmail sends no payload: the headers are read from the source.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import re

from mailwatch.domain.messages import ListedMessage, Message, MessageListPage, MessagePart
from mailwatch.domain.models import MessageMetadata
from mailwatch.domain.text import storable_text

MISSING = MessageMetadata(missing=True)


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _headers(payload: dict | None) -> tuple[tuple[str, str], ...]:
    return tuple((str(h.get("name", "")), str(h.get("value", ""))) for h in (payload or {}).get("headers", ()))


_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)
_FOLD = re.compile(r"\r?\n(?=[ \t])")  # a line break before whitespace continues the header (RFC 5322 folding)


def _source_headers(source: bytes) -> tuple[tuple[str, str], ...]:
    """The top-level headers of an RFC 822 source, unfolded, values as written (as Gmail's payload shows them)."""
    parsed = _HEADER_PARSER.parsebytes(source)
    return tuple((str(name), _FOLD.sub("", str(value)).strip()) for name, value in parsed.items())


def metadata_from_resource(resource: dict, *, source: bytes | None = None) -> MessageMetadata:
    """The metadata a MESSAGE_ADDED carries (and GetMessage's metadata format shows).

    Header names and values and the snippet are the sender's text: a Subject with
    a NUL in it is real mail, and Postgres' jsonb cannot hold U+0000 (nor a lone
    surrogate), so they are made storable here, where Gmail's answer becomes ours,
    rather than letting the sync's commit fail on every attempt.
    """
    internal = resource.get("internalDate")
    headers = _source_headers(source) if source is not None else _headers(resource.get("payload"))
    return MessageMetadata(
        headers=tuple((storable_text(name), storable_text(value)) for name, value in headers),
        snippet=storable_text(resource.get("snippet", "")),
        size_estimate=int(resource.get("sizeEstimate") or 0),
        internal_date_ms=int(internal) if internal not in (None, "") else None,
    )


def _part(resource: dict) -> MessagePart:
    body = resource.get("body") or {}
    return MessagePart(
        part_id=str(resource.get("partId", "")),
        mime_type=str(resource.get("mimeType", "")),
        filename=str(resource.get("filename", "")),
        headers=_headers(resource),
        body=_b64url(body["data"]) if body.get("data") else b"",
        attachment_id=str(body.get("attachmentId", "")),
        parts=tuple(_part(child) for child in resource.get("parts", ())),
    )


def message_from_resource(resource: dict, fmt: str) -> Message:
    """A domain Message from messages.get(format=fmt)."""
    raw = _b64url(resource.get("raw", "")) if fmt == "raw" else None
    return Message(
        id=str(resource["id"]),
        thread_id=str(resource.get("threadId", "")),
        label_ids=tuple(resource.get("labelIds", ())),
        metadata=metadata_from_resource(resource, source=raw),
        payload=_part(resource["payload"]) if fmt == "full" and "payload" in resource else None,
        raw=raw,
    )


def attachment_from_resource(resource: dict) -> bytes:
    """The decoded bytes of users.messages.attachments.get's MessagePartBody."""
    return _b64url(resource.get("data", ""))


def message_list_page(response: dict) -> MessageListPage:
    """A page of users.messages.list: messages carry only id and threadId, a
    page may come without `messages`, and the last one without a token."""
    return MessageListPage(
        messages=tuple(ListedMessage(id=str(m["id"]), thread_id=str(m.get("threadId", "")))
                       for m in response.get("messages", ())),
        next_page_token=response.get("nextPageToken") or None,
        result_size_estimate=int(response.get("resultSizeEstimate") or 0),
    )
