"""The client's two-layer error model.

Layer 1: `RPCError` — every failed call, with the gRPC status code, message,
and the `google.rpc` details the server attached (ErrorInfo reason, domain and
metadata; BadRequest field violations; RetryInfo; RequestInfo), parsed lazily
from the trailing metadata with `grpc_status.rpc_status.from_call`.

Layer 2: typed subclasses for the codes and reasons a caller acts on
(`NotFoundError`, `InvalidArgumentError`, `CursorExpiredError`, ...). Catch
the subclass you can handle and let `RPCError` cover the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

#: ErrorInfo.domain of the errors mailwatch produces.
ERROR_DOMAIN = "mailwatch.dev"


class MailwatchClientError(Exception):
    """Base class of every exception this library raises."""


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field (google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


class RPCError(MailwatchClientError):
    """A call failed with a gRPC status.

    `reason`, `error_metadata`, `field_violations`, `retry_delay` and
    `request_id` come from the status details and are parsed on first use.
    """

    def __init__(self, code: grpc.StatusCode, message: str, *, raw: Any = None) -> None:
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message
        #: The underlying `grpc.RpcError` / `grpc.aio.AioRpcError` (None for synthetic errors).
        self.raw = raw

    @cached_property
    def status(self) -> status_pb2.Status | None:
        """The rich `google.rpc.Status`, or None when the server sent no details."""
        if self.raw is None:
            return None
        try:
            return rpc_status.from_call(self.raw)
        except (ValueError, AttributeError, TypeError):  # mismatched code or no trailers: no details
            return None

    def _detail(self, message_type):
        if self.status is None:
            return None
        for detail in self.status.details:
            if detail.Is(message_type.DESCRIPTOR):
                parsed = message_type()
                detail.Unpack(parsed)
                return parsed
        return None

    @cached_property
    def error_info(self) -> error_details_pb2.ErrorInfo | None:
        return self._detail(error_details_pb2.ErrorInfo)

    @property
    def reason(self) -> str | None:
        """The stable UPPER_SNAKE reason (ErrorInfo.reason), when the server sent one."""
        return self.error_info.reason if self.error_info is not None else None

    @property
    def domain(self) -> str | None:
        return self.error_info.domain if self.error_info is not None else None

    @property
    def error_metadata(self) -> dict[str, str]:
        """ErrorInfo.metadata (dynamic facts about this failure)."""
        return dict(self.error_info.metadata) if self.error_info is not None else {}

    @cached_property
    def field_violations(self) -> list[FieldViolation]:
        bad_request = self._detail(error_details_pb2.BadRequest)
        if bad_request is None:
            return []
        return [FieldViolation(v.field, v.description) for v in bad_request.field_violations]

    @cached_property
    def retry_delay(self) -> float | None:
        """Seconds the server asked the caller to wait (RetryInfo), if any."""
        info = self._detail(error_details_pb2.RetryInfo)
        if info is None or not info.HasField("retry_delay"):
            return None
        return info.retry_delay.seconds + info.retry_delay.nanos / 1e9

    @cached_property
    def request_id(self) -> str | None:
        info = self._detail(error_details_pb2.RequestInfo)
        return info.request_id if info is not None and info.request_id else None

    def __reduce__(self):  # keep exceptions picklable without the raw call
        return (_rebuild, (type(self), self.code, self.message))


def _rebuild(cls, code, message):
    return cls(code, message)


class InvalidArgumentError(RPCError):
    """INVALID_ARGUMENT: see `field_violations`."""


class InvalidCursorError(InvalidArgumentError):
    """INVALID_ARGUMENT, reason INVALID_CURSOR: the cursor is not a position of this tenant's log."""


class UnauthenticatedError(RPCError):
    """UNAUTHENTICATED: missing, unknown or revoked API key / operator token."""


class PermissionDeniedError(RPCError):
    """PERMISSION_DENIED."""


class AdminDisabledError(PermissionDeniedError):
    """PERMISSION_DENIED, reason ADMIN_DISABLED: the server has no operator token configured."""


class NotFoundError(RPCError):
    """NOT_FOUND (also what another tenant's resource looks like)."""


class AlreadyExistsError(RPCError):
    """ALREADY_EXISTS."""


class FailedPreconditionError(RPCError):
    """FAILED_PRECONDITION (e.g. GMAIL_AUTH_FAILED: the caller's Google setup refused)."""


class CursorExpiredError(FailedPreconditionError):
    """FAILED_PRECONDITION, reason CURSOR_EXPIRED: the cursor is older than the retained log.

    The consumer must resync, then restart the stream from "now" or
    "earliest" (`earliest_cursor` reads everything still retained).
    """

    @property
    def earliest_cursor(self) -> bytes | None:
        value = self.error_metadata.get("earliest_cursor")
        return value.encode("ascii") if value else None


class RateLimitedError(RPCError):
    """RESOURCE_EXHAUSTED: slow down (`retry_delay` says for how long, when known)."""


class UnavailableError(RPCError):
    """UNAVAILABLE: the server (or Gmail behind it) is unreachable; retried for idempotent calls."""


class DeadlineExceededError(RPCError):
    """DEADLINE_EXCEEDED: the call's timeout passed."""


class InternalError(RPCError):
    """INTERNAL / UNKNOWN: a server bug; `request_id` helps the operator find it in the logs."""


_BY_CODE: dict[grpc.StatusCode, type[RPCError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimitedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNKNOWN: InternalError,
}

# Reasons that refine a code's class. Looked up only for these codes, so the
# details of other errors are parsed only when the caller asks for them.
_BY_REASON: dict[tuple[grpc.StatusCode, str], type[RPCError]] = {
    (grpc.StatusCode.FAILED_PRECONDITION, "CURSOR_EXPIRED"): CursorExpiredError,
    (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CURSOR"): InvalidCursorError,
    (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_DISABLED"): AdminDisabledError,
}
_REFINED_CODES = frozenset(code for code, _ in _BY_REASON)


def from_rpc_error(exc: grpc.RpcError) -> RPCError:
    """The typed exception for a failed call (`grpc.RpcError` or `grpc.aio.AioRpcError`)."""
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
    message = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    cls = _BY_CODE.get(code, RPCError)
    if code in _REFINED_CODES:
        probe = RPCError(code, message or "", raw=exc)
        cls = _BY_REASON.get((code, probe.reason or ""), cls)
    return cls(code, message or "", raw=exc)

