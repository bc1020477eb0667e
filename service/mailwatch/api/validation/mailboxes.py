"""MailboxService request validation: proto request -> checked, normalised values
(the shared field checks and the collector are in `fields`)."""

from __future__ import annotations

import dataclasses
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from mailwatch.api import tokens
from mailwatch.api.convert import EVENT_TYPE_FROM_PROTO, MAILBOX_STATE_FROM_PROTO
from mailwatch.api.validation import fields
from mailwatch.domain import addresses
from mailwatch.domain.backfill import MAX_BACKFILL_MESSAGES, BackfillRequest
from mailwatch.domain.errors import InvalidArgument, InvalidCursor
from mailwatch.domain.models import (
    DEFAULT_METADATA_HEADERS,
    Credential,
    EventType,
    LabelFilter,
    MailboxState,
    ServiceAccountCredential,
    TenantDefaultCredential,
)
from mailwatch.domain.stream_partitions import MAX_PARTITIONS, StreamPartition
from mailwatch.streams.query import StartKind, StreamQuery
from mailwatch.v1 import mailbox_service_pb2

MAX_STREAM_MAILBOX_IDS = 1000
MAX_BATCH_REGISTRATIONS = 1000
DEFAULT_MAX_BATCH_SIZE = 500
MAX_BATCH_SIZE = 1000
DEFAULT_HEARTBEAT_SECONDS = 15.0
MIN_HEARTBEAT_SECONDS = 1.0
MAX_HEARTBEAT_SECONDS = 300.0
MAX_HEADER_NAMES = 20
MAX_NOTE_LENGTH = 1000
DEFAULT_MESSAGE_PAGE_SIZE = 100  # Gmail's own default for messages.list
MAX_MESSAGE_PAGE_SIZE = 500  # Gmail's maximum maxResults
MAX_LABELED_MESSAGE_PAGE_SIZE = 100  # with labels every message is one more Gmail call (5 units)
MAX_QUERY_CHARS = 2000
_HEADER_NAME_RE = re.compile(r"[!-9;-~]{1,100}")
# Gmail message ids are hexadecimal (e.g. "18c2f1a3b4d5e6f7").
_MESSAGE_ID_RE = re.compile(r"[0-9A-Fa-f]{1,40}")
# Gmail's label ids: system labels (upper case, e.g. CATEGORY_PERSONAL) and user labels ("Label_12").
_LABEL_ID_RE = re.compile(r"[A-Z][A-Z0-9_]{0,99}|Label_[0-9]{1,20}")
MAX_BACKFILL_LABEL_IDS = 10
_EARLIEST_SINCE_SECONDS = 0


@dataclass(frozen=True)
class MailboxRegistration:
    email_address: str  # lower-cased
    label_filter: LabelFilter
    credential: Credential | TenantDefaultCredential  # the tenant's defaults when not given
    metadata_headers: tuple[str, ...] | None = None  # None: no metadata on events
    include_drafts: bool = False
    backfill: BackfillRequest | None = None  # None: the stream starts at the watch


@dataclass(frozen=True)
class BatchRegistration:
    label_filter: LabelFilter
    # Per requested address, in order: (address lower-cased, its credential:
    # the request's service account with the address as subject, or the
    # tenant's default), or why that address is refused.
    registrations: list[tuple[str, Credential | TenantDefaultCredential] | InvalidArgument]
    include_drafts: bool = False
    backfill: BackfillRequest | None = None


@dataclass(frozen=True)
class MailboxListQuery:
    page: fields.PageRequest
    states: tuple[MailboxState, ...]  # empty: all


def validate_register_mailbox(request: mailbox_service_pb2.RegisterMailboxRequest) -> MailboxRegistration:
    problems = fields.Violations()
    email = fields.email_address(request.email_address, "email_address", problems)
    label_ids = fields.label_ids(request.label_ids, problems)
    behavior = fields.label_filter_behavior(request.label_filter_behavior, problems)
    credential: Credential | TenantDefaultCredential | None = None
    kind = request.WhichOneof("credentials")
    if kind == "service_account":
        credential = fields.service_account(request.service_account, email, problems)
    elif kind == "oauth" and not (request.oauth.client_id or request.oauth.client_secret):
        # Only a refresh token: for the tenant's default OAuth client.
        credential = TenantDefaultCredential(
            refresh_token=fields.secret(request.oauth.refresh_token, "oauth.refresh_token", problems))
    elif kind == "oauth":
        credential = fields.oauth(request.oauth, problems)
    else:
        credential = TenantDefaultCredential()  # the tenant's default service account
    metadata_headers = _metadata_options(request, problems)
    backfill = backfill_request(request, problems)
    problems.raise_if_any()
    assert credential is not None
    return MailboxRegistration(
        email_address=email,
        label_filter=LabelFilter(label_ids=label_ids, behavior=behavior),
        credential=credential,
        metadata_headers=metadata_headers,
        include_drafts=request.include_drafts,
        backfill=backfill,
    )


def validate_batch_register_mailboxes(
    request: mailbox_service_pb2.BatchRegisterMailboxesRequest,
) -> BatchRegistration:
    """The shared part must be valid (else InvalidArgument for the call); each
    address is checked on its own and a bad one only fails its own result."""
    problems = fields.Violations()
    count = len(request.email_addresses)
    if not count:
        problems.add("email_addresses", "required: at least one address")
    elif count > MAX_BATCH_REGISTRATIONS:
        problems.add("email_addresses", f"at most {MAX_BATCH_REGISTRATIONS} addresses per call")
    label_ids = fields.label_ids(request.label_ids, problems)
    behavior = fields.label_filter_behavior(request.label_filter_behavior, problems)
    shared: ServiceAccountCredential | None = None
    if request.HasField("service_account"):
        if request.service_account.subject:
            problems.add("service_account.subject", "must be empty: each mailbox impersonates its own address")
        shared = fields.service_account(request.service_account, "", problems)
    backfill = backfill_request(request, problems)
    problems.raise_if_any()

    registrations: list[tuple[str, Credential | TenantDefaultCredential] | InvalidArgument] = []
    first_index: dict[str, int] = {}
    for index, value in enumerate(request.email_addresses):
        field = f"email_addresses[{index}]"
        one = fields.Violations()
        email = fields.email_address(value, field, one)
        if not one.items and email in first_index:
            one.add(field, f"duplicate of email_addresses[{first_index[email]}]")
        first_index.setdefault(email, index)
        if one.items:
            registrations.append(InvalidArgument(one.items))
        elif shared is not None:
            registrations.append((email, dataclasses.replace(shared, subject=email)))
        else:
            registrations.append((email, TenantDefaultCredential()))  # the tenant's service account
    return BatchRegistration(label_filter=LabelFilter(label_ids=label_ids, behavior=behavior),
                             registrations=registrations, include_drafts=request.include_drafts, backfill=backfill)


def backfill_request(request, problems: fields.Violations, *, now: datetime | None = None) -> BackfillRequest | None:
    """A registration's `backfill`, or None when it has none."""
    if not request.HasField("backfill"):
        return None
    backfill = request.backfill
    since = None
    if backfill.HasField("since"):
        now = now or datetime.now(timezone.utc)
        if not (_EARLIEST_SINCE_SECONDS <= backfill.since.seconds and 0 <= backfill.since.nanos < 1_000_000_000):
            problems.add("backfill.since", "must be a time after 1970-01-01T00:00:00Z")
        else:
            # Seconds are compared before converting: a Timestamp past year 9999 makes ToDatetime raise.
            if backfill.since.seconds <= now.timestamp():
                since = backfill.since.ToDatetime(tzinfo=timezone.utc)
            if since is None or since > now:
                since = None
                problems.add("backfill.since", "must not be in the future")
    if backfill.newest < 0:
        problems.add("backfill.newest", "must not be negative")
    elif backfill.newest > MAX_BACKFILL_MESSAGES:
        problems.add("backfill.newest", f"at most {MAX_BACKFILL_MESSAGES:,}")
    if since is None and backfill.newest == 0 and not backfill.HasField("since"):
        problems.add("backfill", "set since, newest or both")
    if len(backfill.label_ids) > MAX_BACKFILL_LABEL_IDS:
        problems.add("backfill.label_ids", f"at most {MAX_BACKFILL_LABEL_IDS} label ids")
    seen: set[str] = set()
    for index, label_id in enumerate(backfill.label_ids):
        if not _LABEL_ID_RE.fullmatch(label_id):
            problems.add(f"backfill.label_ids[{index}]",
                         "must be a Gmail label id: a system label (e.g. INBOX, CATEGORY_UPDATES) or Label_<digits>")
        elif label_id in seen:
            problems.add(f"backfill.label_ids[{index}]", f"duplicate label id {label_id!r}")
        seen.add(label_id)
    return BackfillRequest(since=since, newest=backfill.newest or None, label_ids=tuple(backfill.label_ids))


def _metadata_options(request: mailbox_service_pb2.RegisterMailboxRequest, problems: fields.Violations):
    """The header names to fetch for MESSAGE_ADDED metadata, or None when metadata is off."""
    if not request.HasField("metadata") or not request.metadata.enabled:
        if request.HasField("metadata") and request.metadata.headers:
            problems.add("metadata.enabled", "must be true when metadata.headers are given")
        return None
    headers = header_names(request.metadata.headers, "metadata.headers", problems)
    return headers or DEFAULT_METADATA_HEADERS


def header_names(values, field: str, problems: fields.Violations) -> tuple[str, ...]:
    """RFC 5322 field names (printable ASCII without ':'), at most MAX_HEADER_NAMES, no duplicates."""
    if len(values) > MAX_HEADER_NAMES:
        problems.add(field, f"at most {MAX_HEADER_NAMES} header names")
        return ()
    seen: set[str] = set()
    names: list[str] = []
    for index, name in enumerate(values):
        if not _HEADER_NAME_RE.fullmatch(name):
            problems.add(f"{field}[{index}]", "must be a header name: 1-100 printable ASCII characters without ':'")
        elif name.lower() in seen:
            problems.add(f"{field}[{index}]", f"duplicate header name {name!r}")
        else:
            seen.add(name.lower())
            names.append(name)
    return tuple(names)


@dataclass(frozen=True)
class MessageQuery:
    mailbox_id: uuid.UUID
    message_id: str
    format: str  # "metadata" | "full" | "raw" (Gmail's spelling)
    metadata_headers: tuple[str, ...]


_MESSAGE_FORMATS = {
    mailbox_service_pb2.MESSAGE_FORMAT_UNSPECIFIED: "metadata",
    mailbox_service_pb2.MESSAGE_FORMAT_METADATA: "metadata",
    mailbox_service_pb2.MESSAGE_FORMAT_FULL: "full",
    mailbox_service_pb2.MESSAGE_FORMAT_RAW: "raw",
}


def validate_get_message(request: mailbox_service_pb2.GetMessageRequest) -> MessageQuery:
    problems = fields.Violations()
    mailbox_id = fields.parse_uuid(request.mailbox_id, "mailbox_id", problems)
    if not _MESSAGE_ID_RE.fullmatch(request.message_id):
        problems.add("message_id", "required: a Gmail message id (hexadecimal, at most 40 characters)")
    fmt = _MESSAGE_FORMATS.get(request.format)
    if fmt is None:
        problems.add("format", "unknown message format")
    headers = header_names(request.metadata_headers, "metadata_headers", problems)
    if headers and fmt != "metadata":
        problems.add("metadata_headers", "only allowed with MESSAGE_FORMAT_METADATA")
    problems.raise_if_any()
    assert mailbox_id is not None and fmt is not None
    return MessageQuery(mailbox_id, request.message_id.lower(), fmt, headers or DEFAULT_METADATA_HEADERS)


MAX_ATTACHMENT_ID_CHARS = 4096
_ATTACHMENT_ID_RE = re.compile(r"[A-Za-z0-9_-]+")  # Gmail's attachment ids are base64url


@dataclass(frozen=True)
class AttachmentQuery:
    mailbox_id: uuid.UUID
    message_id: str
    attachment_id: str


def validate_get_attachment(request: mailbox_service_pb2.GetAttachmentRequest) -> AttachmentQuery:
    problems = fields.Violations()
    mailbox_id = fields.parse_uuid(request.mailbox_id, "mailbox_id", problems)
    if not _MESSAGE_ID_RE.fullmatch(request.message_id):
        problems.add("message_id", "required: a Gmail message id (hexadecimal, at most 40 characters)")
    if not request.attachment_id:
        problems.add("attachment_id", "required")
    elif len(request.attachment_id) > MAX_ATTACHMENT_ID_CHARS:
        problems.add("attachment_id", f"at most {MAX_ATTACHMENT_ID_CHARS} characters")
    elif not _ATTACHMENT_ID_RE.fullmatch(request.attachment_id):
        problems.add("attachment_id", "must be a Gmail attachment id (base64url: letters, digits, '-' and '_')")
    problems.raise_if_any()
    assert mailbox_id is not None
    return AttachmentQuery(mailbox_id, request.message_id.lower(), request.attachment_id)


@dataclass(frozen=True)
class MessageListQuery:
    mailbox_id: uuid.UUID
    label_ids: tuple[str, ...]
    query: str
    include_spam_trash: bool
    include_labels: bool
    page_size: int  # Gmail's maxResults
    gmail_page_token: str | None  # None: the first page
    fingerprint: str  # binds the next page token to the other parameters


def validate_list_messages(request: mailbox_service_pb2.ListMessagesRequest) -> MessageListQuery:
    problems = fields.Violations()
    mailbox_id = fields.parse_uuid(request.mailbox_id, "mailbox_id", problems)
    label_ids = fields.label_ids(request.label_ids, problems)
    if len(request.query) > MAX_QUERY_CHARS:
        problems.add("query", f"at most {MAX_QUERY_CHARS} characters")
    elif any(ord(ch) < 0x20 and ch not in "\t\n\r" for ch in request.query):
        problems.add("query", "must not contain control characters")
    # page_size is not part of the token's binding: AIP-158 lets it change between pages.
    page = fields.page_request(
        request.page_size, request.page_token, problems, "ListMessages", request.mailbox_id.lower(),
        sorted(set(label_ids)), request.query, request.include_spam_trash, request.include_labels,
    )
    if page.position is not None and not (isinstance(page.position, str) and page.position):
        problems.add("page_token", "page token is not valid")
    problems.raise_if_any()
    assert mailbox_id is not None
    cap = MAX_LABELED_MESSAGE_PAGE_SIZE if request.include_labels else MAX_MESSAGE_PAGE_SIZE
    return MessageListQuery(
        mailbox_id=mailbox_id, label_ids=label_ids, query=request.query,
        include_spam_trash=request.include_spam_trash, include_labels=request.include_labels,
        page_size=DEFAULT_MESSAGE_PAGE_SIZE if request.page_size <= 0 else min(request.page_size, cap),
        gmail_page_token=page.position, fingerprint=page.fingerprint,
    )


def validate_send_test_event(request: mailbox_service_pb2.SendTestEventRequest) -> tuple[uuid.UUID | None, str]:
    problems = fields.Violations()
    mailbox_id = fields.parse_uuid(request.mailbox_id, "mailbox_id", problems) if request.mailbox_id else None
    if len(request.note) > MAX_NOTE_LENGTH:
        problems.add("note", f"at most {MAX_NOTE_LENGTH} characters")
    elif "\x00" in request.note:  # Postgres text and jsonb cannot hold it (found by the RPC fuzz suite)
        problems.add("note", "must not contain NUL characters")
    problems.raise_if_any()
    return mailbox_id, request.note


def validate_mailbox_id(value: str, field: str = "mailbox_id") -> uuid.UUID:
    return fields.validate_uuid(value, field)


def validate_list_mailboxes(request: mailbox_service_pb2.ListMailboxesRequest) -> MailboxListQuery:
    problems = fields.Violations()
    states: list[MailboxState] = []
    for index, value in enumerate(request.states):
        state = MAILBOX_STATE_FROM_PROTO.get(value)
        if state is None:
            problems.add(f"states[{index}]", "must be one of " + ", ".join(s.value for s in MailboxState))
        elif state not in states:
            states.append(state)
    states_key = sorted(state.value for state in states)
    page = fields.page_request(request.page_size, request.page_token, problems, "ListMailboxes", states_key)
    problems.raise_if_any()
    return MailboxListQuery(page=page, states=tuple(states))


def validate_stream_changes(request: mailbox_service_pb2.StreamChangesRequest) -> StreamQuery:
    problems = fields.Violations()

    if len(request.mailbox_ids) > MAX_STREAM_MAILBOX_IDS:
        problems.add("mailbox_ids", f"at most {MAX_STREAM_MAILBOX_IDS} mailbox ids")
    mailbox_ids: list[uuid.UUID] = []
    for index, value in enumerate(request.mailbox_ids):
        mailbox_id = fields.parse_uuid(value, f"mailbox_ids[{index}]", problems)
        if mailbox_id is not None and mailbox_id not in mailbox_ids:
            mailbox_ids.append(mailbox_id)

    event_types: list[EventType] = []
    for index, value in enumerate(request.event_types):
        event_type = EVENT_TYPE_FROM_PROTO.get(value)
        if event_type is None:
            problems.add(f"event_types[{index}]", "must be a known event type other than UNSPECIFIED")
        elif event_type not in event_types:
            event_types.append(event_type)

    if request.max_batch_size < 0:
        problems.add("max_batch_size", "must not be negative")
    max_batch_size = DEFAULT_MAX_BATCH_SIZE if request.max_batch_size <= 0 else min(request.max_batch_size, MAX_BATCH_SIZE)

    heartbeat_seconds = DEFAULT_HEARTBEAT_SECONDS
    if request.HasField("heartbeat_interval"):
        interval = request.heartbeat_interval
        if interval.seconds < 0 or interval.nanos < 0 or interval.nanos >= 1_000_000_000:
            problems.add("heartbeat_interval", "must be a non-negative duration")
        elif interval.seconds or interval.nanos:
            requested = interval.seconds + interval.nanos / 1e9
            heartbeat_seconds = min(max(requested, MIN_HEARTBEAT_SECONDS), MAX_HEARTBEAT_SECONDS)

    partition = None
    if request.HasField("partition"):
        index, count = request.partition.index, request.partition.count
        if not 0 <= count <= MAX_PARTITIONS:
            problems.add("partition.count", f"must be from 0 to {MAX_PARTITIONS}")
        elif not 0 <= index < max(count, 1):
            problems.add("partition.index", f"must be from 0 to {max(count, 1) - 1} (count - 1)")
        elif count > 1:
            partition = StreamPartition(index, count)

    start, after_sequence = StartKind.NOW, None
    cursor_problem: InvalidCursor | None = None
    which = request.WhichOneof("start")
    if which == "cursor":
        try:
            after_sequence = tokens.decode_cursor(request.cursor)
            start = StartKind.CURSOR
        except InvalidCursor as exc:
            cursor_problem = exc
            problems.add("cursor", exc.message)
    elif which == "start_position":
        if request.start_position == mailbox_service_pb2.START_POSITION_EARLIEST:
            start = StartKind.EARLIEST
        elif request.start_position not in (
            mailbox_service_pb2.START_POSITION_NOW,
            mailbox_service_pb2.START_POSITION_UNSPECIFIED,
        ):
            problems.add("start_position", f"unknown value {request.start_position}")

    # A bad cursor alone keeps its own stable reason (INVALID_CURSOR).
    if cursor_problem is not None and len(problems.items) == 1:
        raise cursor_problem
    problems.raise_if_any()
    return StreamQuery(
        mailbox_ids=tuple(mailbox_ids),
        event_types=tuple(event_types),
        start=start,
        after_sequence=after_sequence,
        max_batch_size=max_batch_size,
        heartbeat_seconds=heartbeat_seconds,
        partition=partition,
    )


