"""Message metadata on MESSAGE_ADDED events, for mailboxes registered with it.

Fetched before the page's events commit, so a stream never shows a
MESSAGE_ADDED without its metadata, and a crash before the commit simply
fetches again on the next attempt (nothing is skipped, nothing doubled).
"""

from __future__ import annotations

from dataclasses import replace

from mailwatch.domain.models import Credential, EventType, Mailbox, MessageLabels, NewEvent
from mailwatch.gmail.client import GmailClient
from mailwatch.gmail.messages import MISSING

# How long a message the history lists may stay invisible to messages.get (Gmail's
# notification and history can outrun its own read path) before it counts as gone.
NOT_YET_VISIBLE_SECONDS = 5.0


async def with_metadata(
    gmail: GmailClient, credential: Credential, mailbox: Mailbox, events: list[NewEvent],
    fetched: dict[str, MessageLabels | None], *, deleted: frozenset[str] = frozenset(),
) -> list[NewEvent]:
    """`events` with metadata attached to each MESSAGE_ADDED (unchanged when the mailbox has metadata off).

    `fetched`: what the sync's lookups already brought (with metadata, for such a
    mailbox); only the rest is fetched, into it, so a message costs one messages.get.
    A message Gmail does not find is asked about again for a moment, unless the
    history says it was deleted (`deleted`); then its metadata is marked missing.
    """
    if mailbox.metadata_headers is None:
        return events
    added = [e.message_id for e in events if e.type is EventType.MESSAGE_ADDED and e.message_id]
    wanted = [i for i in added if i not in fetched or (fetched[i] is not None and fetched[i].metadata is None)]
    if wanted:
        await gmail.message_labels(
            credential, mailbox.email_address, [i for i in wanted if i not in deleted], tenant_id=mailbox.tenant_id,
            metadata_headers=mailbox.metadata_headers, into=fetched, not_found_grace=NOT_YET_VISIBLE_SECONDS,
        )
        for message_id in wanted:
            if message_id in deleted:
                fetched.setdefault(message_id, None)
    return [
        replace(event, metadata=_metadata(fetched.get(event.message_id)))
        if event.type is EventType.MESSAGE_ADDED and event.message_id else event
        for event in events
    ]


def _metadata(state: MessageLabels | None):
    return state.metadata if state is not None and state.metadata is not None else MISSING
