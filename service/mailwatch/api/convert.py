"""Domain <-> proto conversions. Pure functions; no validation here (see validation/)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Iterable, Iterator, Sequence

from google.protobuf import timestamp_pb2

from mailwatch.api.tokens import encode_cursor
from mailwatch.domain import messages, models
from mailwatch.domain.backfill import BackfillProgress, BackfillState
from mailwatch.streams.changes import EventBatch, Heartbeat, StreamItem
from mailwatch.usage_limits import EffectiveLimits
from mailwatch.v1 import admin_service_pb2, mailbox_service_pb2, resources_pb2

# Domain enums are StrEnums whose values are the proto value names without
# the enum's prefix (MailboxState.ACTIVE <-> MAILBOX_STATE_ACTIVE).


def _enum_maps(domain_enum, proto_enum, prefix: str):
    to_proto = {member: proto_enum.Value(prefix + member.value) for member in domain_enum}
    return to_proto, {number: member for member, number in to_proto.items()}


MAILBOX_STATE_TO_PROTO, MAILBOX_STATE_FROM_PROTO = _enum_maps(
    models.MailboxState, resources_pb2.MailboxState, "MAILBOX_STATE_"
)
EVENT_TYPE_TO_PROTO, EVENT_TYPE_FROM_PROTO = _enum_maps(models.EventType, resources_pb2.EventType, "EVENT_TYPE_")
LABEL_FILTER_BEHAVIOR_TO_PROTO, LABEL_FILTER_BEHAVIOR_FROM_PROTO = _enum_maps(
    models.LabelFilterBehavior, resources_pb2.LabelFilterBehavior, "LABEL_FILTER_BEHAVIOR_"
)
CREDENTIAL_KIND_TO_PROTO, CREDENTIAL_KIND_FROM_PROTO = _enum_maps(
    models.CredentialKind, resources_pb2.CredentialKind, "CREDENTIAL_KIND_"
)
BACKFILL_STATE_TO_PROTO, _ = _enum_maps(BackfillState, resources_pb2.BackfillState, "BACKFILL_STATE_")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for an aware datetime (naive ones are taken as UTC); None stays None."""
    if value is None:
        return None
    result = timestamp_pb2.Timestamp()
    _set_time(result, value)
    return result


def _set_time(target: timestamp_pb2.Timestamp, value: datetime) -> None:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    # Exact integer arithmetic, and a fraction of Timestamp.FromDatetime's cost
    # (it runs once per streamed event).
    since = value - _EPOCH
    target.seconds = since.days * 86400 + since.seconds
    target.nanos = since.microseconds * 1000


def datetime_from(value: timestamp_pb2.Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=timezone.utc)


def label_filter_to_proto(label_filter: models.LabelFilter) -> resources_pb2.LabelFilter:
    return resources_pb2.LabelFilter(
        label_ids=list(label_filter.label_ids),
        behavior=LABEL_FILTER_BEHAVIOR_TO_PROTO[label_filter.behavior],
    )


def mailbox_error_to_proto(
    reason: str | None, message: str | None, at: datetime | None
) -> resources_pb2.MailboxError | None:
    if not message and not reason and at is None:
        return None
    return resources_pb2.MailboxError(message=message or "", time=timestamp(at), reason=reason or "")


def mailbox_to_proto(mailbox: models.Mailbox) -> resources_pb2.Mailbox:
    return resources_pb2.Mailbox(
        id=str(mailbox.id),
        email_address=mailbox.email_address,
        state=MAILBOX_STATE_TO_PROTO[mailbox.state],
        label_filter=label_filter_to_proto(mailbox.label_filter),
        credential_kind=CREDENTIAL_KIND_TO_PROTO[mailbox.credential_kind],
        history_id=mailbox.history_id or 0,
        notified_history_id=mailbox.notified_history_id or 0,
        watch_expire_time=timestamp(mailbox.watch_expiration),
        next_renew_time=timestamp(mailbox.next_renewal_at),
        last_notification_time=timestamp(mailbox.last_notification_at),
        last_sync_time=timestamp(mailbox.last_sync_at),
        last_error=mailbox_error_to_proto(mailbox.last_error_reason, mailbox.last_error, mailbox.last_error_at),
        next_attempt_time=timestamp(mailbox.next_attempt_at),
        create_time=timestamp(mailbox.created),
        update_time=timestamp(mailbox.updated),
        metadata=metadata_options_to_proto(mailbox.metadata_headers),
        include_drafts=mailbox.include_drafts,
        watch_topic=mailbox.watch_topic or "",
    )




def backfill_to_proto(progress: BackfillProgress) -> resources_pb2.MailboxBackfill:
    return resources_pb2.MailboxBackfill(
        state=BACKFILL_STATE_TO_PROTO[progress.state], listed_count=progress.listed,
        delivered_count=progress.delivered, skipped_count=progress.skipped, create_time=timestamp(progress.created),
        complete_time=timestamp(progress.completed_at),
        last_error=mailbox_error_to_proto(progress.last_error_reason, progress.last_error, progress.last_error_at),
    )


def attributes(detail: dict) -> dict[str, str]:
    """ChangeEvent.attributes from a detail dict: strings as is, the rest as JSON."""
    return {
        str(key): value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        for key, value in detail.items()
    }


def change_event_to_proto(event: models.ChangeEvent) -> resources_pb2.ChangeEvent:
    proto = resources_pb2.ChangeEvent(**_event_fields(event))
    _set_time(proto.observe_time, event.observed_at)
    return proto


def _add_events(response: mailbox_service_pb2.StreamChangesResponse, events: "Iterable[models.ChangeEvent]") -> None:
    """Append `events` to a response, built in place.

    This runs for every event streamed, and building these messages is the
    largest part of the CPU of draining a backlog (docs/performance.md). A
    finished ChangeEvent handed to a response is copied into it, and a
    Timestamp handed to an event is copied again, so each event is created
    inside the response and its time set in place."""
    add = response.events.add
    for event in events:
        _set_time(add(**_event_fields(event)).observe_time, event.observed_at)


def _event_fields(event: models.ChangeEvent) -> dict:
    """A ChangeEvent's fields except observe_time (see `_set_time`)."""
    return dict(
        id=str(event.id),
        cursor=encode_cursor(event.sequence),
        type=EVENT_TYPE_TO_PROTO[event.type],
        mailbox_id="" if event.mailbox_id is None else str(event.mailbox_id),
        email_address=event.email_address or "",
        history_id=event.history_id or 0,
        message_id=event.message_id or "",
        thread_id=event.thread_id or "",
        label_ids=event.label_ids,
        attributes=attributes(event.detail) if event.detail else None,
        metadata=None if event.metadata is None else metadata_to_proto(event.metadata),
    )


def _headers(pairs) -> list[resources_pb2.MessageHeader]:
    return [resources_pb2.MessageHeader(name=name, value=value) for name, value in pairs]


def metadata_to_proto(metadata: models.MessageMetadata) -> resources_pb2.MessageMetadata:
    internal = metadata.internal_date_ms
    return resources_pb2.MessageMetadata(
        headers=_headers(metadata.headers),
        snippet=metadata.snippet,
        size_estimate=metadata.size_estimate,
        internal_time=None if internal is None else timestamp(datetime.fromtimestamp(internal / 1000, tz=timezone.utc)),
        missing=metadata.missing,
    )


def metadata_options_to_proto(headers: tuple[str, ...] | None) -> resources_pb2.MetadataOptions | None:
    return None if headers is None else resources_pb2.MetadataOptions(enabled=True, headers=list(headers))


# GetMessage streams bodies in pieces well under gRPC's default 4 MiB message limit.
MESSAGE_CHUNK_BYTES = 1024 * 1024


def _part_to_proto(part: messages.MessagePart) -> mailbox_service_pb2.MessagePart:
    return mailbox_service_pb2.MessagePart(
        part_id=part.part_id, mime_type=part.mime_type, filename=part.filename, headers=_headers(part.headers),
        body_size=len(part.body), attachment_id=part.attachment_id,
        parts=[_part_to_proto(child) for child in part.parts],
    )


def message_responses(message: messages.Message) -> Iterator[mailbox_service_pb2.GetMessageResponse]:
    """GetMessage's responses: the message, then part bodies (FULL) or the source (RAW) in chunks."""
    response = mailbox_service_pb2.GetMessageResponse
    yield response(message=mailbox_service_pb2.Message(
        id=message.id, thread_id=message.thread_id, label_ids=list(message.label_ids),
        metadata=metadata_to_proto(message.metadata),
        payload=None if message.payload is None else _part_to_proto(message.payload),
        raw_size=0 if message.raw is None else len(message.raw),
    ))
    if message.payload is not None:
        for part in message.payload.walk():
            for start in range(0, len(part.body), MESSAGE_CHUNK_BYTES):
                yield response(part_chunk=mailbox_service_pb2.PartChunk(
                    part_id=part.part_id, data=part.body[start : start + MESSAGE_CHUNK_BYTES]
                ))
    if message.raw is not None:
        for start in range(0, len(message.raw), MESSAGE_CHUNK_BYTES):
            yield response(raw_chunk=message.raw[start : start + MESSAGE_CHUNK_BYTES])


def attachment_responses(data: bytes) -> Iterator[mailbox_service_pb2.GetAttachmentResponse]:
    """GetAttachment's responses: the size, then the bytes in chunks of at most MESSAGE_CHUNK_BYTES."""
    response = mailbox_service_pb2.GetAttachmentResponse
    yield response(size=len(data))
    view = memoryview(data)
    for start in range(0, len(data), MESSAGE_CHUNK_BYTES):
        yield response(data=bytes(view[start : start + MESSAGE_CHUNK_BYTES]))


def message_list_to_proto(page: messages.MessageListPage, next_page_token: str) -> mailbox_service_pb2.ListMessagesResponse:
    """ListMessages' response: the listed messages (id, thread, labels when fetched) and our page token."""
    return mailbox_service_pb2.ListMessagesResponse(
        messages=[mailbox_service_pb2.Message(id=m.id, thread_id=m.thread_id, label_ids=list(m.label_ids))
                  for m in page.messages],
        next_page_token=next_page_token, result_size_estimate=page.result_size_estimate,
    )


# A response stays under gRPC's default 4 MiB receive limit, which a client
# keeps unless it raises it: a batch of events carrying message metadata
# (headers, snippet) can outgrow it long before max_batch_size events. Each
# event costs its size plus at most 6 bytes of framing (tag, length varint).
MAX_RESPONSE_BYTES = 4_000_000
_EVENT_FRAMING_BYTES = 6


def events_responses(events: "Sequence[models.ChangeEvent]") -> tuple[mailbox_service_pb2.StreamChangesResponse, ...]:
    """The events in order, in as few responses as MAX_RESPONSE_BYTES allows
    (one unless they are large; an event larger than the limit travels alone)."""
    response = mailbox_service_pb2.StreamChangesResponse()
    _add_events(response, events)
    if response.ByteSize() <= MAX_RESPONSE_BYTES:
        return (response,)
    responses, chunk, size = [], mailbox_service_pb2.StreamChangesResponse(), 0
    for proto in response.events:
        framed = proto.ByteSize() + _EVENT_FRAMING_BYTES
        if chunk.events and size + framed > MAX_RESPONSE_BYTES:
            responses.append(chunk)
            chunk, size = mailbox_service_pb2.StreamChangesResponse(), 0
        chunk.events.append(proto)
        size += framed
    responses.append(chunk)
    return tuple(responses)


def heartbeat_response(server_time: datetime, sequence: int | None) -> mailbox_service_pb2.StreamChangesResponse:
    """A heartbeat; `sequence` is the stream's position (None: nothing seen yet)."""
    return mailbox_service_pb2.StreamChangesResponse(
        heartbeat=mailbox_service_pb2.Heartbeat(
            server_time=timestamp(server_time),
            cursor=encode_cursor(sequence) if sequence is not None else b"",
        )
    )


# Streams with the same filter (most: none) get the same batches from their
# tenant's shared reader: the responses are built once and handed to each of
# them (gRPC only serializes them; nothing mutates them). A batch a stream read
# on its own (a backlog) is nobody else's: it is converted without the cache.
_RESPONSES_MAX = 1_000
_responses: dict[tuple, tuple[mailbox_service_pb2.StreamChangesResponse, ...]] = {}
_RESPONSES_MEMO = "api.convert.stream_responses"


def stream_responses(item: StreamItem) -> tuple[mailbox_service_pb2.StreamChangesResponse, ...]:
    """The StreamChangesResponses of one stream item, in order: a heartbeat, or
    a batch's events (more than one response only when they would exceed
    MAX_RESPONSE_BYTES together; each event carries its own cursor, so a
    split changes nothing about resuming).

    Responses for shared event batches are shared: treat them as read-only."""
    if isinstance(item, EventBatch):
        if not item.shared:
            return events_responses(item.events)
        responses = item.memo.get(_RESPONSES_MEMO)
        if responses is not None:
            return responses  # the same item on another stream: converted already
        key = tuple(event.id for event in item.events)
        responses = _responses.get(key)
        if responses is None:
            responses = _responses[key] = events_responses(item.events)
            if len(_responses) > _RESPONSES_MAX:
                del _responses[next(iter(_responses))]
        item.memo[_RESPONSES_MEMO] = responses
        return responses
    if isinstance(item, Heartbeat):
        return (heartbeat_response(item.server_time, item.position),)
    raise TypeError(f"not a stream item: {type(item).__name__}")


def tenant_to_proto(tenant: models.Tenant) -> admin_service_pb2.Tenant:
    return admin_service_pb2.Tenant(id=str(tenant.id), name=tenant.name, create_time=timestamp(tenant.created))


def tenant_limits_to_proto(tenant_id: uuid.UUID, limits: EffectiveLimits) -> admin_service_pb2.TenantLimits:
    own = [name for name in ("streams", "rpcs_per_second", "registrations_per_minute")
           if getattr(limits.own, name) is not None]
    return admin_service_pb2.TenantLimits(
        tenant_id=str(tenant_id), streams=limits.streams, rpcs_per_second=limits.rpcs_per_second,
        registrations_per_minute=limits.registrations_per_minute, own_fields=own,
    )


def api_key_to_proto(api_key: models.ApiKey) -> admin_service_pb2.ApiKey:
    return admin_service_pb2.ApiKey(
        id=str(api_key.id),
        tenant_id=str(api_key.tenant_id),
        prefix=api_key.prefix,
        create_time=timestamp(api_key.created),
        revoke_time=timestamp(api_key.revoked_at),
    )


def subscription_status_to_proto(
    subscription: str, status: models.SubscriptionStatus | None
) -> resources_pb2.SubscriptionStatus:
    if status is None or status.ok is None:
        return resources_pb2.SubscriptionStatus(subscription=subscription)
    return resources_pb2.SubscriptionStatus(
        subscription=subscription,
        state=resources_pb2.SUBSCRIPTION_STATE_OK if status.ok else resources_pb2.SUBSCRIPTION_STATE_FAILING,
        last_error="" if status.ok else (status.last_error or ""),
        last_error_time=timestamp(status.last_error_at),
        last_success_time=timestamp(status.last_success_at),
        consecutive_failures=status.consecutive_failures,
    )


def google_settings_to_proto(
    settings: models.GoogleSettings, status: models.SubscriptionStatus | None = None, *, gmail_budget: int = 0,
) -> resources_pb2.GoogleSettings:
    """The settings without their secret (only the SA e-mail / OAuth client id); `gmail_budget` is
    the deployment's Gmail quota budget, shown when the tenant has none of its own."""
    return resources_pb2.GoogleSettings(
        tenant_id=str(settings.tenant_id),
        project_id=settings.project_id,
        credential_kind=CREDENTIAL_KIND_TO_PROTO[settings.credential_kind],
        credential_id=settings.credential_id,
        pubsub_topic=settings.pubsub_topic,
        pubsub_subscription=settings.pubsub_subscription or "",
        push_audience=settings.push_audience or "",
        subscription_status=(
            subscription_status_to_proto(settings.pubsub_subscription, status) if settings.pubsub_subscription else None
        ),
        update_time=timestamp(settings.updated),
        gmail_units_per_minute=(
            gmail_budget if settings.gmail_units_per_minute is None else settings.gmail_units_per_minute
        ),
    )
