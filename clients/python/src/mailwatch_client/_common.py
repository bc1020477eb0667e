"""What the sync and asyncio clients share: channel setup, metadata, requests, pages."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Generic, Iterable, Literal, Sequence, TypeVar, Union

import grpc
from google.protobuf import duration_pb2

from mailwatch_client._config import KeepAliveConfig, RetryConfig, TLSConfig
from mailwatch_client._errors import RPCError, from_rpc_error
from mailwatch_client._proto.v1 import admin_service_pb2, mailbox_service_pb2, resources_pb2

T = TypeVar("T")

Metadata = Sequence[tuple[str, Union[str, bytes]]]

#: Where a stream starts when no cursor (and no checkpoint) is given.
Start = Union[Literal["now", "earliest"], bytes]


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: "Use the client's default" for per-call `timeout` (None means no deadline).
DEFAULT: Any = _Default()

# Reconnect quickly once a server is back: gRPC's own connection backoff
# otherwise grows to 120 s, and calls fail fast (UNAVAILABLE) in between.
_BASE_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a List call. `next_page_token` is empty on the last page."""

    items: list[T]
    next_page_token: str

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def channel_options(keepalive: KeepAliveConfig | None, extra: Iterable[tuple[str, Any]], tls: TLSConfig | None):
    options = dict(_BASE_CHANNEL_OPTIONS)
    if keepalive is not None:
        options["grpc.keepalive_time_ms"] = int(keepalive.interval * 1000)
        options["grpc.keepalive_timeout_ms"] = int(keepalive.timeout * 1000)
    if tls is not None and tls.server_name:
        options["grpc.ssl_target_name_override"] = tls.server_name
    options.update(dict(extra))
    return list(options.items())


def tls_config(tls: bool | TLSConfig | None) -> TLSConfig | None:
    if tls is True:
        return TLSConfig()
    if tls is False or tls is None:
        return None
    return tls


def channel_credentials(tls: TLSConfig) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=tls.root_certificates,
        private_key=tls.client_private_key,
        certificate_chain=tls.client_certificate,
    )


def bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def call_metadata(auth: tuple[tuple[str, str], ...], default: Metadata, extra: Metadata) -> list[tuple[str, Any]]:
    """Client-wide metadata, then the call's; a call's own `authorization` replaces the client's."""
    extra = list(extra or ())
    overridden = any(key.lower() == "authorization" for key, _ in extra)
    return [*(() if overridden else auth), *default, *extra]


class Deadline:
    """An overall deadline shared by a call's attempts."""

    def __init__(self, timeout: float | None) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def allows_wait(self, seconds: float) -> bool:
        return self.at is None or time.monotonic() + seconds < self.at


class Attempts:
    """The retry decisions of one unary call, whichever twin makes it: one
    deadline shared by all attempts, and after a failure either the delay
    before the next attempt or the typed error to raise."""

    def __init__(self, policy: RetryConfig, timeout: float | None) -> None:
        self.policy = policy
        self.deadline = Deadline(timeout)
        self.made = 0

    def next_timeout(self) -> float | None:
        """Count an attempt and return what is left of the deadline for it."""
        self.made += 1
        return self.deadline.remaining()

    def delay_after(self, exc: grpc.RpcError) -> float:
        """Seconds to wait before retrying `exc`; raises its typed error when it is not retried.

        UNAVAILABLE is retried after the policy's backoff, and RESOURCE_EXHAUSTED
        when the server said when to come back (RetryInfo); either waits at least
        the server's `retry_delay`, so a rate-limited call is not refused again at once."""
        error = from_rpc_error(exc)
        server_delay = server_retry_delay(exc, error)
        if server_delay is not None and self.policy.allows(self.made):
            delay = max(self.policy.backoff(self.made), server_delay)
            if self.deadline.allows_wait(delay):
                return delay
        raise error from None


def server_retry_delay(exc: grpc.RpcError, error: RPCError) -> float | None:
    """How long the server asked to wait before a retry of a retryable failure (0: it did not say);
    None when the failure is not retried (neither UNAVAILABLE nor RESOURCE_EXHAUSTED with RetryInfo)."""
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return error.retry_delay or 0.0
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.retry_delay is not None:
        return error.retry_delay
    return None


# --- requests -----------------------------------------------------------------

Credentials = Union[mailbox_service_pb2.ServiceAccountCredentials, mailbox_service_pb2.OAuthCredentials]


def register_request(
    email_address: str,
    credentials: Credentials,
    label_ids: Sequence[str],
    label_filter_behavior: int,
    message_metadata: bool | Sequence[str] = False,
    include_drafts: bool = False,
    backfill: mailbox_service_pb2.BackfillRequest | None = None,
) -> mailbox_service_pb2.RegisterMailboxRequest:
    request = mailbox_service_pb2.RegisterMailboxRequest(
        email_address=email_address, label_ids=list(label_ids), label_filter_behavior=label_filter_behavior,
        include_drafts=include_drafts, backfill=backfill,
    )
    if message_metadata:
        headers = [] if message_metadata is True else list(message_metadata)
        request.metadata.CopyFrom(resources_pb2.MetadataOptions(enabled=True, headers=headers))
    if isinstance(credentials, mailbox_service_pb2.ServiceAccountCredentials):
        request.service_account.CopyFrom(credentials)
    elif isinstance(credentials, mailbox_service_pb2.OAuthCredentials):
        request.oauth.CopyFrom(credentials)
    else:
        raise TypeError("credentials must be ServiceAccountCredentials or OAuthCredentials")
    return request


def batch_register_request(
    email_addresses: Sequence[str],
    service_account: mailbox_service_pb2.ServiceAccountCredentials | None,
    label_ids: Sequence[str],
    label_filter_behavior: int,
    include_drafts: bool = False,
    backfill: mailbox_service_pb2.BackfillRequest | None = None,
) -> mailbox_service_pb2.BatchRegisterMailboxesRequest:
    request = mailbox_service_pb2.BatchRegisterMailboxesRequest(
        email_addresses=list(email_addresses), label_ids=list(label_ids), label_filter_behavior=label_filter_behavior,
        include_drafts=include_drafts, backfill=backfill,
    )
    if service_account is not None:
        request.service_account.CopyFrom(service_account)
    return request


def mailbox_states(states: Iterable[int | str]) -> list[int]:
    return [_enum_value(resources_pb2.MailboxState, "MAILBOX_STATE_", state) for state in states]


def event_types(types: Iterable[int | str]) -> list[int]:
    """EventType values from values or names ("MESSAGE_ADDED" or "EVENT_TYPE_MESSAGE_ADDED")."""
    return [_enum_value(resources_pb2.EventType, "EVENT_TYPE_", kind) for kind in types]


def _enum_value(enum, prefix: str, value: int | str) -> int:
    if isinstance(value, str):
        name = value.strip().upper()
        if not name.startswith(prefix):
            name = prefix + name
        try:
            return enum.Value(name)
        except ValueError:
            known = ", ".join(n.removeprefix(prefix) for n in enum.keys() if not n.endswith("UNSPECIFIED"))
            raise ValueError(f"unknown value {value!r}; expected one of {known}") from None
    return int(value)


def tenant_selector(request, tenant_id: str | None, tenant_name: str | None):
    if (tenant_id is None) == (tenant_name is None):
        raise ValueError("give exactly one of tenant_id or tenant_name")
    if tenant_id is not None:
        request.tenant_id = tenant_id
    else:
        request.tenant_name = tenant_name
    return request


def create_api_key_request(tenant_id: str | None, tenant_name: str | None):
    return tenant_selector(admin_service_pb2.CreateApiKeyRequest(), tenant_id, tenant_name)


def stream_request(
    *,
    mailbox_ids: Sequence[str],
    types: Sequence[int | str],
    position: bytes | None,
    start: Start,
    max_batch_size: int,
    heartbeat_interval: float | None,
    partition: tuple[int, int] | None = None,
) -> mailbox_service_pb2.StreamChangesRequest:
    """The request that resumes after `position`, or begins at `start` when there is none yet."""
    request = mailbox_service_pb2.StreamChangesRequest(
        mailbox_ids=list(mailbox_ids), event_types=event_types(types), max_batch_size=max_batch_size
    )
    if partition is not None:
        index, count = partition
        request.partition.CopyFrom(mailbox_service_pb2.StreamPartition(index=index, count=count))
    if heartbeat_interval is not None:
        whole, fraction = divmod(heartbeat_interval, 1)
        request.heartbeat_interval.CopyFrom(duration_pb2.Duration(seconds=int(whole), nanos=int(fraction * 1e9)))
    if position:
        request.cursor = position
    elif isinstance(start, (bytes, bytearray)):
        if not start:
            raise ValueError("an empty cursor is not a start position")
        request.cursor = bytes(start)
    elif start == "earliest":
        request.start_position = mailbox_service_pb2.START_POSITION_EARLIEST
    elif start == "now":
        request.start_position = mailbox_service_pb2.START_POSITION_NOW
    else:
        raise ValueError(f"start must be 'now', 'earliest' or a cursor (bytes), not {start!r}")
    return request


_MESSAGE_FORMATS = {
    "metadata": mailbox_service_pb2.MESSAGE_FORMAT_METADATA,
    "full": mailbox_service_pb2.MESSAGE_FORMAT_FULL,
    "raw": mailbox_service_pb2.MESSAGE_FORMAT_RAW,
}


def get_message_request(
    mailbox_id: str, message_id: str, format: str, metadata_headers: Sequence[str]
) -> mailbox_service_pb2.GetMessageRequest:
    if format not in _MESSAGE_FORMATS:
        raise ValueError(f"format must be one of {sorted(_MESSAGE_FORMATS)}, not {format!r}")
    return mailbox_service_pb2.GetMessageRequest(
        mailbox_id=mailbox_id, message_id=message_id, format=_MESSAGE_FORMATS[format],
        metadata_headers=list(metadata_headers),
    )


@dataclass
class FetchedMessage:
    """GetMessage's answer, reassembled: the message, the decoded body of each
    part by part id (format "full") and the RFC 822 source (format "raw")."""

    message: mailbox_service_pb2.Message
    part_bodies: dict[str, bytes] = field(default_factory=dict)
    raw: bytes | None = None


class AttachmentChunks:
    """Reads GetAttachment's streamed responses one at a time: `add` returns a response's bytes
    (empty for the size announcement), `result` checks that the announced size arrived."""

    def __init__(self, request: mailbox_service_pb2.GetAttachmentRequest) -> None:
        self._size: int | None = None
        self._received = 0

    def add(self, response: mailbox_service_pb2.GetAttachmentResponse) -> bytes:
        if response.WhichOneof("content") == "size":
            self._size = response.size
            return b""
        self._received += len(response.data)
        return response.data

    def result(self) -> None:
        if self._size is None or self._size != self._received:
            raise ValueError(f"GetAttachment announced {self._size} bytes and sent {self._received}")


class AttachmentAssembler(AttachmentChunks):
    """Collects GetAttachment's streamed responses into the attachment's bytes."""

    def __init__(self, request: mailbox_service_pb2.GetAttachmentRequest) -> None:
        super().__init__(request)
        self._data = bytearray()

    def add(self, response: mailbox_service_pb2.GetAttachmentResponse) -> bytes:
        data = super().add(response)
        self._data.extend(data)
        return data

    def result(self) -> bytes:  # type: ignore[override]
        super().result()
        return bytes(self._data)


class MessageAssembler:
    """Collects GetMessage's streamed responses into a FetchedMessage."""

    def __init__(self, request: mailbox_service_pb2.GetMessageRequest) -> None:
        self._message: mailbox_service_pb2.Message | None = None
        self._parts: dict[str, bytearray] = {}
        self._raw: bytearray | None = bytearray() if request.format == mailbox_service_pb2.MESSAGE_FORMAT_RAW else None

    def add(self, response: mailbox_service_pb2.GetMessageResponse) -> None:
        kind = response.WhichOneof("content")
        if kind == "message":
            self._message = response.message
        elif kind == "part_chunk":
            self._parts.setdefault(response.part_chunk.part_id, bytearray()).extend(response.part_chunk.data)
        elif kind == "raw_chunk" and self._raw is not None:
            self._raw.extend(response.raw_chunk)

    def result(self) -> FetchedMessage:
        if self._message is None:
            raise ValueError("GetMessage ended without a message")
        return FetchedMessage(
            message=self._message,
            part_bodies={part_id: bytes(data) for part_id, data in self._parts.items()},
            raw=None if self._raw is None else bytes(self._raw),
        )
