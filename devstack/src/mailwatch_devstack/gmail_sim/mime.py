"""A message's RFC 822 source as Gmail shows it: the MessagePart tree, attachments, snippet.

`messages.get(format=full)` renders the source as nested `MessagePart`s (discovery
document): `partId` ("" for the top, then "0", "1", "1.0", … by position), `mimeType`,
`filename`, the part's own `headers`, a `body` (`MessagePartBody`) and, for a multipart,
`parts`. A container's body carries only `size: 0`; a leaf's carries its decoded bytes as
base64url `data` and their `size`, except an attachment (a part with a file name), whose
body has an `attachmentId` and `size` instead: its bytes come from
`users.messages.attachments.get`. Header values are the source's, unfolded.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import re
from dataclasses import dataclass
from email.message import Message as EmailMessage

_PARSER = email.parser.BytesParser(policy=email.policy.compat32)
_ATTACHMENT_PREFIX = "ANGjdJ"  # Gmail's attachment ids are opaque base64url strings like this


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


_FOLD = re.compile(r"\r?\n(?=[ \t])")  # a line break before whitespace continues the header (RFC 5322)


def _unfold(value: str) -> str:
    return _FOLD.sub("", value).strip()


def parse(source: bytes) -> EmailMessage:
    return _PARSER.parsebytes(source)


def headers(part: EmailMessage) -> list[tuple[str, str]]:
    return [(str(name), _unfold(str(value))) for name, value in part.items()]


def _payload(part: EmailMessage) -> bytes:
    if part.is_multipart():
        return b""
    decoded = part.get_payload(decode=True)
    return decoded if isinstance(decoded, bytes) else b""


def _filename(part: EmailMessage) -> str:
    return part.get_filename() or ""


def attachment_id(message_id: str, part_id: str) -> str:
    return _ATTACHMENT_PREFIX + b64url(f"{message_id}:{part_id}".encode("ascii")).rstrip("=")


def part_of_attachment(attachment: str, message_id: str) -> str | None:
    """The part id an attachment id stands for in this message, or None when it is not one of its ids."""
    if not attachment.startswith(_ATTACHMENT_PREFIX):
        return None
    encoded = attachment[len(_ATTACHMENT_PREFIX):]
    try:
        owner, _, part_id = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("ascii").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return part_id if owner == message_id and part_id else None


def message_part(part: EmailMessage, message_id: str, part_id: str = "") -> dict:
    """The MessagePart JSON of `part` (the whole message when part_id is "")."""
    out: dict = {"partId": part_id, "mimeType": part.get_content_type(), "filename": _filename(part),
                 "headers": [{"name": name, "value": value} for name, value in headers(part)]}
    if part.is_multipart():
        out["body"] = {"size": 0}
        prefix = f"{part_id}." if part_id else ""
        out["parts"] = [message_part(child, message_id, f"{prefix}{index}")
                        for index, child in enumerate(part.get_payload())]
        return out
    data = _payload(part)
    if out["filename"]:
        out["body"] = {"attachmentId": attachment_id(message_id, part_id), "size": len(data)}
    else:
        out["body"] = {"size": len(data), "data": b64url(data)} if data else {"size": 0}
    return out


def find_part(root: EmailMessage, part_id: str) -> EmailMessage | None:
    part = root
    for step in part_id.split(".") if part_id else ():
        children = part.get_payload() if part.is_multipart() else []
        if not step.isdigit() or int(step) >= len(children):
            return None
        part = children[int(step)]
    return part


@dataclass(frozen=True)
class Attachment:
    size: int
    data: bytes


def attachment(root: EmailMessage, message_id: str, attachment: str) -> Attachment | None:
    part_id = part_of_attachment(attachment, message_id)
    part = None if part_id is None else find_part(root, part_id)
    if part is None or part.is_multipart() or not _filename(part):
        return None
    data = _payload(part)
    return Attachment(len(data), data)


def text(root: EmailMessage) -> str:
    """The first text/plain part that is not an attachment, decoded (the snippet's source)."""
    for part in root.walk():
        if part.get_content_type() == "text/plain" and not _filename(part):
            charset = part.get_content_charset() or "utf-8"
            try:
                return _payload(part).decode(charset, "replace")
            except LookupError:
                return _payload(part).decode("utf-8", "replace")
    return ""
