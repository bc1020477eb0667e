"""GetMessage and SendTestEvent: a tenant reads its own mailbox's message through
mailwatch's stored credentials, or checks its stream's wiring with a TEST event."""

from __future__ import annotations

import uuid

from mailwatch.domain.messages import Message
from mailwatch.domain.models import ChangeEvent, EventType, NewEvent
from mailwatch.lifecycle.registration import Lifecycle
from mailwatch.store import changes, mailboxes


async def read_message(
    lifecycle: Lifecycle, tenant_id: uuid.UUID, mailbox_id: uuid.UUID, message_id: str, *,
    fmt: str, metadata_headers: tuple[str, ...] = (),
) -> Message:
    """The message in Gmail's format `fmt`, fetched with the mailbox's credentials
    (NotFound for another tenant's mailbox, as for a missing one)."""
    async with lifecycle.sessions() as session:
        mailbox = await mailboxes.get_mailbox(session, tenant_id, mailbox_id)
        ciphertext = await mailboxes.load_credentials_ciphertext(session, tenant_id, mailbox_id)
    return await lifecycle.gmail.get_message(
        lifecycle.secret_box.decrypt_credential(ciphertext), mailbox.email_address, message_id,
        fmt=fmt, metadata_headers=metadata_headers if fmt == "metadata" else (), tenant_id=tenant_id,
    )


async def send_test_event(
    lifecycle: Lifecycle, tenant_id: uuid.UUID, mailbox_id: uuid.UUID | None, note: str
) -> ChangeEvent:
    """Append a TEST event (for one mailbox, or the tenant as a whole) and return it with its cursor."""
    async with lifecycle.sessions() as session, session.begin():
        mailbox = None if mailbox_id is None else await mailboxes.get_mailbox(session, tenant_id, mailbox_id)
        detail = {"note": note} if note else {}
        [event] = await changes.append_events(session, tenant_id, [
            NewEvent(
                mailbox_id=None if mailbox is None else mailbox.id,
                email_address=None if mailbox is None else mailbox.email_address,
                type=EventType.TEST, detail=detail,
            )
        ])
    return event
