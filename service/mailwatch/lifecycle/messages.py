"""GetMessage and SendTestEvent: a tenant reads its own mailbox's message through
mailwatch's stored credentials, or checks its stream's wiring with a TEST event."""

from __future__ import annotations

import uuid

from mailwatch.domain.messages import Message
from mailwatch.domain.models import ChangeEvent
from mailwatch.lifecycle.registration import Lifecycle
from mailwatch.store import registrations


async def read_message(
    lifecycle: Lifecycle, tenant_id: uuid.UUID, mailbox_id: uuid.UUID, message_id: str, *,
    fmt: str, metadata_headers: tuple[str, ...] = (),
) -> Message:
    """The message in Gmail's format `fmt`, fetched with the mailbox's credentials
    (NotFound for another tenant's mailbox, as for a missing one)."""
    mailbox, ciphertext = await registrations.mailbox_with_credentials(lifecycle.sessions, tenant_id, mailbox_id)
    return await lifecycle.gmail.get_message(
        lifecycle.secret_box.decrypt_credential(ciphertext), mailbox.email_address, message_id,
        fmt=fmt, metadata_headers=metadata_headers if fmt == "metadata" else (), tenant_id=tenant_id,
    )


async def send_test_event(
    lifecycle: Lifecycle, tenant_id: uuid.UUID, mailbox_id: uuid.UUID | None, note: str
) -> ChangeEvent:
    """Append a TEST event (for one mailbox, or the tenant as a whole) and return it with its cursor."""
    return await registrations.append_test_event(lifecycle.sessions, tenant_id, mailbox_id, note)
