"""Reading a tenant's own mailbox through mailwatch's stored credentials:
GetMessage, GetAttachment and ListMessages.

`MailboxMessages` is given what it uses (the database, Gmail, the secret box)
and nothing else; every read first finds the tenant's mailbox (NotFound for
another tenant's, as for a missing one) and opens its credential.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

from mailwatch.domain import errors
from mailwatch.domain.messages import Message, MessageListPage
from mailwatch.domain.models import Credential, Mailbox
from mailwatch.gmail.client import GmailClient
from mailwatch.secrets import SecretBox
from mailwatch.store import registrations
from mailwatch.store.db import Sessions


@dataclass(frozen=True)
class MailboxMessages:
    sessions: Sessions
    gmail: GmailClient
    secret_box: SecretBox

    async def read_message(
        self, tenant_id: uuid.UUID, mailbox_id: uuid.UUID, message_id: str, *,
        fmt: str, metadata_headers: tuple[str, ...] = (),
    ) -> Message:
        """The message in Gmail's format `fmt`."""
        mailbox, credential = await self._mailbox(tenant_id, mailbox_id)
        return await self.gmail.get_message(
            credential, mailbox.email_address, message_id,
            fmt=fmt, metadata_headers=metadata_headers if fmt == "metadata" else (), tenant_id=tenant_id,
        )

    async def read_attachment(
        self, tenant_id: uuid.UUID, mailbox_id: uuid.UUID, message_id: str, attachment_id: str
    ) -> bytes:
        """An attachment's bytes."""
        mailbox, credential = await self._mailbox(tenant_id, mailbox_id)
        return await self.gmail.get_attachment(
            credential, mailbox.email_address, message_id, attachment_id, tenant_id=tenant_id,
        )

    async def list_messages(
        self, tenant_id: uuid.UUID, mailbox_id: uuid.UUID, *, label_ids: tuple[str, ...],
        query: str, include_spam_trash: bool, include_labels: bool, page_size: int, page_token: str | None,
    ) -> MessageListPage:
        """One page of the mailbox's messages.list.

        With `include_labels`, each message's current labels come from
        messages.get(format=minimal) in Gmail batches; a message gone by then
        is left out of the page (the mailbox no longer holds it).
        """
        mailbox, credential = await self._mailbox(tenant_id, mailbox_id)
        page = await self.gmail.list_messages(
            credential, mailbox.email_address, label_ids=label_ids, query=query, include_spam_trash=include_spam_trash,
            max_results=page_size, page_token=page_token, tenant_id=tenant_id,
        )
        if not include_labels or not page.messages:
            return page
        labels = await self.gmail.message_labels(
            credential, mailbox.email_address, [m.id for m in page.messages], tenant_id=tenant_id
        )
        return dataclasses.replace(page, messages=tuple(
            dataclasses.replace(m, label_ids=found.label_ids)
            for m in page.messages if (found := labels.get(m.id)) is not None
        ))

    async def _mailbox(self, tenant_id: uuid.UUID, mailbox_id: uuid.UUID) -> tuple[Mailbox, Credential]:
        mailbox, stored = await registrations.mailbox_with_credentials(self.sessions, tenant_id, mailbox_id)
        if stored is None:
            raise errors.MailboxStopped("the mailbox is stopped and keeps no credentials: register it again",
                                        metadata={"mailbox_id": str(mailbox_id)})
        return mailbox, self.secret_box.open(stored, tenant_id=tenant_id)
