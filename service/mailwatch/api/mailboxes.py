"""MailboxService: proto <-> domain for the tenant's mailboxes and change stream.

The tenant comes from the AuthInterceptor (`current_tenant_id()`); every
lookup is scoped by it, so another tenant's mailbox is simply NOT_FOUND.
Whatever a method raises is mapped to a status by the ErrorInterceptor.
"""

from __future__ import annotations

import contextlib
import logging

import grpc
from google.rpc import status_pb2

from mailwatch.api import convert, errors, tokens
from mailwatch.api.paging import after_created_id, one_page
from mailwatch.api.validation import mailboxes as validation
from mailwatch.lifecycle.messages import MailboxMessages
from mailwatch.lifecycle.registration import Registrations
from mailwatch.request_context import current_request_id, current_tenant_id
from mailwatch.store import backfills as backfill_store
from mailwatch.store import google_settings as settings_store
from mailwatch.store import mailboxes as mailbox_store
from mailwatch.store import registrations as registrations_store
from mailwatch.store.db import Sessions
from mailwatch.streams.changes import ChangeStreamer
from mailwatch.usage_limits import UsageLimits
from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc

log = logging.getLogger(__name__)

OK = status_pb2.Status(code=grpc.StatusCode.OK.value[0])


class MailboxServicer(mailbox_service_pb2_grpc.MailboxServiceServicer):
    def __init__(
        self, sessions: Sessions, registrations: Registrations, messages: MailboxMessages, streamer: ChangeStreamer,
        *, limits: UsageLimits | None = None,
    ) -> None:
        self._sessions = sessions
        self._limits = limits  # the tenant's open streams; None: unlimited
        self._registrations = registrations
        self._messages = messages
        self._streamer = streamer

    async def RegisterMailbox(self, request, context):
        registration = validation.validate_register_mailbox(request)
        mailbox = await self._registrations.register(
            current_tenant_id(), registration.email_address, registration.label_filter, registration.credential,
            metadata_headers=registration.metadata_headers, include_drafts=registration.include_drafts,
            backfill=registration.backfill,
        )
        if registration.backfill is None:
            return convert.mailbox_to_proto(mailbox)
        (proto,) = await self._with_backfills([mailbox])
        return proto

    async def BatchRegisterMailboxes(self, request, context):
        batch = validation.validate_batch_register_mailboxes(request)
        outcomes = await self._registrations.register_many(current_tenant_id(), batch.label_filter, batch.registrations,
                                                           include_drafts=batch.include_drafts,
                                                           backfill=batch.backfill)
        request_id = current_request_id()
        registered = [outcome for outcome in outcomes if not isinstance(outcome, Exception)]
        protos = iter(await self._with_backfills(registered) if batch.backfill is not None
                      else [convert.mailbox_to_proto(mailbox) for mailbox in registered])
        results = []
        for address, outcome in zip(request.email_addresses, outcomes):
            if isinstance(outcome, Exception):
                status = errors.status_for(outcome, request_id=request_id)
                if status.code == grpc.StatusCode.INTERNAL.value[0]:
                    log.error("unexpected error registering one address of a batch", exc_info=outcome)
                results.append(mailbox_service_pb2.MailboxRegistrationResult(email_address=address, status=status))
            else:
                results.append(mailbox_service_pb2.MailboxRegistrationResult(
                    email_address=address, status=OK, mailbox=next(protos)
                ))
        return mailbox_service_pb2.BatchRegisterMailboxesResponse(results=results)

    async def StopMailbox(self, request, context):
        mailbox_id = validation.validate_mailbox_id(request.mailbox_id)
        return convert.mailbox_to_proto(await self._registrations.stop(current_tenant_id(), mailbox_id))

    async def GetMailbox(self, request, context):
        mailbox_id = validation.validate_mailbox_id(request.mailbox_id)
        (proto,) = await self._with_backfills(
            [await mailbox_store.fetch_mailbox(self._sessions, current_tenant_id(), mailbox_id)])
        return proto

    async def _with_backfills(self, mailboxes) -> list:
        """The tenant's mailboxes as protos, each with its backfill's progress if one was requested."""
        progress = await backfill_store.progresses(self._sessions, current_tenant_id(), [m.id for m in mailboxes])
        protos = []
        for mailbox in mailboxes:
            proto = convert.mailbox_to_proto(mailbox)
            if mailbox.id in progress:
                proto.backfill.CopyFrom(convert.backfill_to_proto(progress[mailbox.id]))
            protos.append(proto)
        return protos

    async def ListMailboxes(self, request, context):
        query = validation.validate_list_mailboxes(request)
        found = await mailbox_store.mailbox_page(
            self._sessions, current_tenant_id(), states=query.states, after=after_created_id(query.page.position),
            limit=query.page.page_size + 1,
        )
        mailboxes, next_token = one_page(found, query.page, lambda last: [last.created.isoformat(), str(last.id)])
        return mailbox_service_pb2.ListMailboxesResponse(
            mailboxes=await self._with_backfills(mailboxes), next_page_token=next_token
        )

    async def StreamChanges(self, request, context):
        query = validation.validate_stream_changes(request)
        tenant_id = current_tenant_id()
        # Held for the stream's life: past the tenant's limit, the call fails before its first message.
        async with self._stream_slot(tenant_id):
            # Resolve the start before the first message, so a bad cursor or a
            # foreign mailbox id fails the call instead of a half-open stream.
            position = await self._streamer.open_position(tenant_id, query)
            # aclosing: a cancelled call finalizes the stream now, not at garbage collection.
            # Written here (gRPC's reader/writer form) rather than yielded: an async
            # generator would put one more step between the streamer and gRPC's
            # write for every message of every stream (a commit fanned out to
            # 1,000 streams pays each step 1,000 times).
            async with contextlib.aclosing(self._streamer.stream(tenant_id, query, start_position=position)) as items:
                async for item in items:
                    for response in convert.stream_responses(item):
                        await context.write(response)

    def _stream_slot(self, tenant_id):
        return contextlib.nullcontext() if self._limits is None else self._limits.stream_slot(tenant_id)

    async def GetMessage(self, request, context):
        query = validation.validate_get_message(request)
        message = await self._messages.read_message(
            current_tenant_id(), query.mailbox_id, query.message_id,
            fmt=query.format, metadata_headers=query.metadata_headers,
        )
        for response in convert.message_responses(message):
            yield response

    async def GetAttachment(self, request, context):
        query = validation.validate_get_attachment(request)
        data = await self._messages.read_attachment(
            current_tenant_id(), query.mailbox_id, query.message_id, query.attachment_id
        )
        for response in convert.attachment_responses(data):
            yield response

    async def ListMessages(self, request, context):
        query = validation.validate_list_messages(request)
        page = await self._messages.list_messages(
            current_tenant_id(), query.mailbox_id, label_ids=query.label_ids, query=query.query,
            include_spam_trash=query.include_spam_trash, include_labels=query.include_labels,
            page_size=query.page_size, page_token=query.gmail_page_token,
        )
        # Gmail's token, bound to this request's parameters (AIP-158), is the next page's position.
        next_token = "" if page.next_page_token is None else tokens.encode_page_token(
            page.next_page_token, fingerprint=query.fingerprint
        )
        return convert.message_list_to_proto(page, next_token)

    async def SendTestEvent(self, request, context):
        mailbox_id, note = validation.validate_send_test_event(request)
        event = await registrations_store.append_test_event(self._sessions, current_tenant_id(), mailbox_id, note)
        return convert.change_event_to_proto(event)


    async def GetGoogleSettings(self, request, context):
        settings, status = await settings_store.settings_with_status(self._sessions, current_tenant_id())
        return convert.google_settings_to_proto(settings, status, gmail_budget=self._registrations.gmail.budgets.default)

