"""Message metadata on MESSAGE_ADDED events, for mailboxes registered with it.

Fetched before the page's events commit, so a stream never shows a
MESSAGE_ADDED without its metadata, and a crash before the commit simply
fetches again on the next attempt (nothing is skipped, nothing doubled).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

from mailwatch.domain.models import Credential, EventType, Mailbox, MessageLabels, MessageMetadata, NewEvent
from mailwatch.gmail.client import GmailClient
from mailwatch.gmail.messages import MISSING


async def with_metadata(
    gmail: GmailClient, credential: Credential, mailbox: Mailbox, events: list[NewEvent],
    known: Mapping[str, MessageLabels | None] | None = None,
) -> list[NewEvent]:
    """`events` with metadata attached to each MESSAGE_ADDED (unchanged when the mailbox has metadata off).

    `known`: what the sync's label lookups already fetched (with metadata, for such a
    mailbox); only the rest is fetched here, so a message costs one messages.get.
    """
    if mailbox.metadata_headers is None:
        return events
    known = known or {}
    fetched: dict[str, MessageMetadata] = {}
    for message_id, state in known.items():
        if state is None:
            fetched[message_id] = MISSING
        elif state.metadata is not None:
            fetched[message_id] = state.metadata
    wanted = [e.message_id for e in events
              if e.type is EventType.MESSAGE_ADDED and e.message_id and e.message_id not in fetched]
    if wanted:
        fetched.update(await gmail.messages_metadata(
            credential, mailbox.email_address, wanted, headers=mailbox.metadata_headers,
            tenant_id=mailbox.tenant_id,
        ))
    return [
        replace(event, metadata=fetched.get(event.message_id, MISSING))
        if event.type is EventType.MESSAGE_ADDED and event.message_id else event
        for event in events
    ]
