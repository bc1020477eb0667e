"""RegisterMailbox and StopMailbox: the Gmail call, then one transaction.

Gmail is called before anything is written, so a refused watch leaves no
half-registered mailbox; the mailbox row and its lifecycle event are written
together so a stream never sees one without the other.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mailwatch.clock import Clock
from mailwatch.domain import addresses, errors
from mailwatch.domain.models import (
    Credential,
    EventType,
    LabelFilter,
    Mailbox,
    MailboxState,
    NewEvent,
    ServiceAccountCredential,
    TenantDefaultCredential,
)
from mailwatch.domain.projects import resolve_credential, topic_project, union_filter, watch_topic_for
from mailwatch.gmail.client import GmailClient
from mailwatch.lifecycle.google_settings import load_google_settings
from mailwatch.lifecycle.schedule import next_renewal_at, renewal_key
from mailwatch.lifecycle.shared_watch import watch_taking_over
from mailwatch.secrets import SecretBox, credential_kind
from mailwatch.store import changes, mailboxes, watch_groups


@dataclass
class Lifecycle:
    sessions: async_sessionmaker[AsyncSession]
    gmail: GmailClient
    secret_box: SecretBox
    clock: Clock
    topic: str

    async def register(
        self, tenant_id: uuid.UUID, email_address: str, label_filter: LabelFilter,
        requested: Credential | TenantDefaultCredential, *, metadata_headers: tuple[str, ...] | None = None,
    ) -> Mailbox:
        async with self.sessions() as session:
            settings = await load_google_settings(session, self.secret_box, tenant_id)
            credential = resolve_credential(requested, settings, email_address)
            # Refused here, before Gmail is asked, when the credentials' project has no topic.
            topic = watch_topic_for(credential, from_tenant_defaults=isinstance(requested, TenantDefaultCredential),
                                    settings=settings, deployment_topic=self.topic)
            existing = await mailboxes.find_mailbox_by_address(session, tenant_id, email_address)
            if (
                existing is not None and existing.state is MailboxState.ACTIVE
                and existing.label_filter == label_filter and existing.metadata_headers == metadata_headers
                and (existing.watch_topic or self.topic) == topic
            ):
                stored = await mailboxes.load_credentials_ciphertext(session, tenant_id, existing.id)
                if self._stored_credential(stored) == credential:
                    return existing  # same registration again: nothing to do, no Gmail call
            # Registrations of this address in this Google project (any tenant) share one
            # Gmail watch: it must report what any of them wants.
            project = topic_project(topic) or ""
            sharing = await watch_groups.group_members(
                session, email_address, project, deployment_topic=self.topic,
                exclude=existing.id if existing is not None else None,
            )
        gmail_address = await self._gmail_address(tenant_id, email_address, credential)
        watch = await watch_taking_over(
            self.gmail, credential, email_address, topic=topic,
            label_filter=union_filter([label_filter, *(member.label_filter for member in sharing)]),
            tenant_id=tenant_id,
        )
        now = self.clock.now()
        renew_at = next_renewal_at(now, watch.expiration, key=renewal_key(tenant_id, email_address))
        async with self.sessions() as session, session.begin():
            mailbox, created = await mailboxes.upsert_mailbox(
                session, tenant_id,
                email_address=email_address,
                label_filter=label_filter,
                credential_kind=credential_kind(credential),
                credentials_ciphertext=self.secret_box.encrypt_credential(credential),
                history_id=watch.history_id,
                watch_expiration=watch.expiration,
                next_renewal_at=renew_at,
                metadata_headers=metadata_headers,
                watch_topic=topic,
                gmail_address=gmail_address,
            )
            detail = {
                "expiration": watch.expiration.isoformat(),
                "registration": "created" if created else "updated",
                "previous_state": existing.state.value if existing else "",
            }
            await changes.append_events(session, tenant_id, [
                NewEvent(mailbox_id=mailbox.id, email_address=mailbox.email_address,
                         type=EventType.WATCH_STARTED, history_id=watch.history_id, detail=detail),
            ])
        return mailbox

    async def register_many(
        self,
        tenant_id: uuid.UUID,
        label_filter: LabelFilter,
        registrations: Sequence[tuple[str, Credential | TenantDefaultCredential] | Exception],
        *,
        concurrency: int = 16,
    ) -> list[Mailbox | Exception]:
        """Register each (address, credential) as `register` would, `concurrency`
        at a time; a failure (any exception) is returned in that address's place
        and does not stop the others.

        Entries that already are errors (refused by validation) are returned as
        they are. Bounded concurrency keeps a batch of 1,000 from asking Gmail for
        1,000 watches at once (users.watch costs 100 of the project's 1,200,000
        quota units per minute) or from taking every database connection.
        """
        slots = asyncio.Semaphore(concurrency)

        async def one(item) -> Mailbox | Exception:
            if isinstance(item, Exception):
                return item
            address, credential = item
            async with slots:
                try:
                    return await self.register(tenant_id, address, label_filter, credential)
                except Exception as exc:  # noqa: BLE001 - answered for this address alone
                    return exc

        return list(await asyncio.gather(*(one(item) for item in registrations)))

    async def _gmail_address(self, tenant_id: uuid.UUID, email_address: str, credential: Credential) -> str:
        """The address Gmail knows the authorised user by (its notifications name it).

        Gmail is called as "me", so the credential alone picks the mailbox. It
        may be the registered address's own primary address (registered under an
        alias), but a service account told to impersonate *another* address than
        the one registered must not watch that other mailbox under this name.
        """
        profile = await self.gmail.profile(credential, email_address, tenant_id=tenant_id)
        canonical = addresses.normalize(profile.email_address)
        registered = addresses.normalize(email_address)
        if (isinstance(credential, ServiceAccountCredential) and canonical != registered
                and addresses.normalize(credential.subject) != registered):
            raise errors.GmailPermissionDenied(
                "the service account impersonates another user than the registered address",
                metadata={"gmail_address": canonical},
            )
        return canonical

    def _stored_credential(self, ciphertext: bytes) -> Credential | None:
        """The stored credential, or None when no configured key opens it any more:
        registering again with fresh credentials is then exactly the way out."""
        try:
            return self.secret_box.decrypt_credential(ciphertext)
        except errors.CredentialUndecryptable:
            return None

    async def stop(self, tenant_id: uuid.UUID, mailbox_id: uuid.UUID) -> Mailbox:
        async with self.sessions() as session:
            mailbox = await mailboxes.get_mailbox(session, tenant_id, mailbox_id)
            if mailbox.state is MailboxState.STOPPED:
                return mailbox
            ciphertext = await mailboxes.load_credentials_ciphertext(session, tenant_id, mailbox_id)
            # users.stop would end the watch for every registration sharing it (same
            # address and project, any tenant): leave it to them while one is ACTIVE.
            # Its filter narrows at their next renewal; until then they may sync for
            # changes only this one wanted, and find nothing of theirs.
            still_needed = await watch_groups.group_members(
                session, mailbox.email_address, topic_project(mailbox.watch_topic or self.topic) or "",
                deployment_topic=self.topic, exclude=mailbox_id,
            )
        try:
            if not still_needed:
                await self.gmail.stop(
                    self.secret_box.decrypt_credential(ciphertext), mailbox.email_address, tenant_id=tenant_id
                )
        except (errors.GmailAuthFailed, errors.GmailMailboxNotFound, errors.GmailPermissionDenied,
                errors.CredentialUndecryptable):
            # Gmail cannot be told, but a dead watch expires by itself within 7
            # days and notifications for a STOPPED mailbox are ignored.
            pass
        async with self.sessions() as session, session.begin():
            mailbox, changed = await mailboxes.mark_stopped(session, tenant_id, mailbox_id)
            if changed:
                await changes.append_events(session, tenant_id, [
                    NewEvent(mailbox_id=mailbox.id, email_address=mailbox.email_address,
                             type=EventType.MAILBOX_STOPPED, history_id=mailbox.history_id),
                ])
        return mailbox
