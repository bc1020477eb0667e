"""GetMessage, GetAttachment, ListMessages and SendTestEvent: a tenant reads its own mailbox's
messages through mailwatch's stored credentials, or checks its stream's wiring
with a TEST event."""

from __future__ import annotations

import dataclasses
import uuid

from mailwatch.domain.messages import Message, MessageListPage
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


async def read_attachment(
    lifecycle: Lifecycle, tenant_id: uuid.UUID, mailbox_id: uuid.UUID, message_id: str, attachment_id: str
) -> bytes:
    """An attachment's bytes, fetched with the mailbox's credentials (NotFound for another tenant's mailbox)."""
    mailbox, ciphertext = await registrations.mailbox_with_credentials(lifecycle.sessions, tenant_id, mailbox_id)
    return await lifecycle.gmail.get_attachment(
        lifecycle.secret_box.decrypt_credential(ciphertext), mailbox.email_address, message_id, attachment_id,
        tenant_id=tenant_id,
    )


async def list_messages(
    lifecycle: Lifecycle, tenant_id: uuid.UUID, mailbox_id: uuid.UUID, *, label_ids: tuple[str, ...],
    query: str, include_spam_trash: bool, include_labels: bool, page_size: int, page_token: str | None,
) -> MessageListPage:
    """One page of the mailbox's messages.list (NotFound for another tenant's mailbox).

    With `include_labels`, each message's current labels come from
    messages.get(format=minimal) in Gmail batches; a message gone by then
    is left out of the page (the mailbox no longer holds it).
    """
    mailbox, ciphertext = await registrations.mailbox_with_credentials(lifecycle.sessions, tenant_id, mailbox_id)
    credential = lifecycle.secret_box.decrypt_credential(ciphertext)
    page = await lifecycle.gmail.list_messages(
        credential, mailbox.email_address, label_ids=label_ids, query=query, include_spam_trash=include_spam_trash,
        max_results=page_size, page_token=page_token, tenant_id=tenant_id,
    )
    if not include_labels or not page.messages:
        return page
    labels = await lifecycle.gmail.message_labels(
        credential, mailbox.email_address, [m.id for m in page.messages], tenant_id=tenant_id
    )
    return dataclasses.replace(page, messages=tuple(
        dataclasses.replace(m, label_ids=found.label_ids)
        for m in page.messages if (found := labels.get(m.id)) is not None
    ))


async def send_test_event(
    lifecycle: Lifecycle, tenant_id: uuid.UUID, mailbox_id: uuid.UUID | None, note: str
) -> ChangeEvent:
    """Append a TEST event (for one mailbox, or the tenant as a whole) and return it with its cursor."""
    return await registrations.append_test_event(lifecycle.sessions, tenant_id, mailbox_id, note)
