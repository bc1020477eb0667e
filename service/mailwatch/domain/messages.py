"""A Gmail message as GetMessage returns it, and a page of a mailbox's listing: pure data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from mailwatch.domain.models import MessageMetadata


@dataclass(frozen=True)
class MessagePart:
    """One MIME part (format=full), its body decoded from Gmail's base64url."""

    part_id: str
    mime_type: str
    filename: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = field(default=b"", repr=False)
    attachment_id: str = ""  # set when Gmail did not inline the body
    parts: tuple["MessagePart", ...] = ()

    def walk(self):
        """This part and its descendants, depth first (the order their bodies are streamed in)."""
        yield self
        for child in self.parts:
            yield from child.walk()


@dataclass(frozen=True)
class Message:
    id: str
    thread_id: str
    label_ids: tuple[str, ...]
    metadata: MessageMetadata
    payload: MessagePart | None = None  # format=full
    raw: bytes | None = field(default=None, repr=False)  # format=raw: the RFC 822 source


@dataclass(frozen=True)
class ListedMessage:
    """A message as users.messages.list names it; labels only when they were asked for."""

    id: str
    thread_id: str
    label_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class MessageListPage:
    """One page of users.messages.list, newest first."""

    messages: tuple[ListedMessage, ...]
    next_page_token: str | None  # Gmail's token; None on the last page
    result_size_estimate: int
