"""Message metadata on MESSAGE_ADDED events, for mailboxes registered with it.

Fetched before the page's events commit, so a stream never shows a
MESSAGE_ADDED without its metadata, and a crash before the commit simply
fetches again on the next attempt (nothing is skipped, nothing doubled).
"""

from __future__ import annotations

from dataclasses import replace

from mailwatch.domain.models import Credential, EventType, Mailbox, NewEvent
from mailwatch.gmail.client import GmailClient
from mailwatch.gmail.messages import MISSING


async def with_metadata(
    gmail: GmailClient, credential: Credential, mailbox: Mailbox, events: list[NewEvent]
) -> list[NewEvent]:
    """`events` with metadata attached to each MESSAGE_ADDED (unchanged when the mailbox has metadata off)."""
    if mailbox.metadata_headers is None:
        return events
    wanted = [e.message_id for e in events if e.type is EventType.MESSAGE_ADDED and e.message_id]
    if not wanted:
        return events
    fetched = await gmail.messages_metadata(
        credential, mailbox.email_address, wanted, headers=mailbox.metadata_headers, tenant_id=mailbox.tenant_id
    )
    return [
        replace(event, metadata=fetched.get(event.message_id, MISSING))
        if event.type is EventType.MESSAGE_ADDED and event.message_id else event
        for event in events
    ]
