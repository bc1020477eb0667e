"""The one table: domain exception -> gRPC status code + google.rpc details.

The ErrorInterceptor (`mailwatch.api.interceptors.errors`) ends every RPC that
raises with `abort_with_error`, which turns a `MailwatchError` into a rich
status (ErrorInfo with the exception's stable `reason`, BadRequest field
violations for every INVALID_ARGUMENT, RetryInfo when Gmail said when to
retry, RequestInfo with the request id), a database outage into UNAVAILABLE
with RetryInfo (`DatabaseUnavailable`), and any other exception into
INTERNAL, logged with its traceback but never shown to the caller.

A new failure gets its own status by a domain exception in `STATUS_CODES`
(library exceptions are translated to domain ones in `as_domain_error` or
where they are caught, e.g. `gmail/errors.py`).

Clients parse the details with `grpc_status.rpc_status.from_call(call)`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import NoReturn

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from mailwatch.api.tokens import encode_cursor
from mailwatch.domain import errors as domain
from mailwatch.request_context import current_request_id
from mailwatch.store._errors import is_concurrency_conflict, is_database_unavailable

log = logging.getLogger(__name__)

#: ErrorInfo.domain of every error mailwatch produces.
ERROR_DOMAIN = "mailwatch.dev"

#: ErrorInfo.reason of failures that are not a MailwatchError (bugs, outages).
INTERNAL_REASON = "INTERNAL"

# The table. Lookup walks the exception's MRO, so a subclass without an entry
# gets its nearest ancestor's code. Gmail failures that the caller must fix on
# the Google side (credentials, delegation, topic permissions, unknown user)
# are FAILED_PRECONDITION rather than PERMISSION_DENIED / NOT_FOUND: the caller
# is allowed to call mailwatch, and the mailwatch resource does exist; it is
# the state of their Google setup that stops the operation.
STATUS_CODES: dict[type[domain.MailwatchError], grpc.StatusCode] = {
    domain.MailwatchError: grpc.StatusCode.INTERNAL,
    domain.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    domain.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    domain.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    domain.AdminDisabled: grpc.StatusCode.PERMISSION_DENIED,
    domain.NotFound: grpc.StatusCode.NOT_FOUND,
    domain.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    domain.NoDefaultCredentials: grpc.StatusCode.FAILED_PRECONDITION,
    domain.MailboxStopped: grpc.StatusCode.FAILED_PRECONDITION,
    domain.CursorExpired: grpc.StatusCode.FAILED_PRECONDITION,
    # Our own resources (usage_limits.py): RetryInfo says when to come back.
    domain.LimitExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    domain.TenantStreamLimit: grpc.StatusCode.RESOURCE_EXHAUSTED,
    domain.RpcRateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    domain.RegistrationRateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    domain.RegistrationBatchOverLimit: grpc.StatusCode.FAILED_PRECONDITION,
    domain.InvalidCursor: grpc.StatusCode.INVALID_ARGUMENT,
    # Server-side secrets trouble: not the caller's fault, but naming it lets
    # them tell the operator (no secret is in the message). Re-registering the
    # mailbox with fresh credentials fixes an undecryptable one.
    domain.SecretsNotConfigured: grpc.StatusCode.FAILED_PRECONDITION,
    domain.CredentialUndecryptable: grpc.StatusCode.FAILED_PRECONDITION,
    domain.GmailError: grpc.StatusCode.UNAVAILABLE,
    domain.GmailAuthFailed: grpc.StatusCode.FAILED_PRECONDITION,
    domain.GmailPermissionDenied: grpc.StatusCode.FAILED_PRECONDITION,
    domain.GmailAccessRefused: grpc.StatusCode.FAILED_PRECONDITION,
    domain.GmailAddressMismatch: grpc.StatusCode.FAILED_PRECONDITION,
    domain.GmailTopicNotPublishable: grpc.StatusCode.FAILED_PRECONDITION,
    domain.TopicProjectMismatch: grpc.StatusCode.FAILED_PRECONDITION,
    domain.GmailPushClientConflict: grpc.StatusCode.FAILED_PRECONDITION,
    domain.GmailRateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    domain.GmailUnavailable: grpc.StatusCode.UNAVAILABLE,
    domain.GmailClockSkew: grpc.StatusCode.UNAVAILABLE,
    domain.GmailHistoryExpired: grpc.StatusCode.FAILED_PRECONDITION,
    # A Gmail 400 that no request field explains is about the mailbox's Google
    # side, not the caller's argument ("Mail service not enabled" is
    # GmailAccessRefused, a permanent refusal).
    domain.GmailBadRequest: grpc.StatusCode.FAILED_PRECONDITION,
    domain.GmailLabelRejected: grpc.StatusCode.INVALID_ARGUMENT,
    domain.GmailQueryRejected: grpc.StatusCode.INVALID_ARGUMENT,
    domain.GmailMailboxNotFound: grpc.StatusCode.FAILED_PRECONDITION,
    # A Postgres restart or failover: the client library resumes / retries on
    # UNAVAILABLE, so a consumer rides it out instead of stopping for good.
    domain.DatabaseUnavailable: grpc.StatusCode.UNAVAILABLE,
    # gRPC's code for a concurrency conflict: nothing was written, the call may be retried.
    domain.ConcurrentUpdate: grpc.StatusCode.ABORTED,
    # The server refuses to start on such a database; if it is downgraded
    # under a running one, calls fail until the operator migrates.
    domain.NotMigrated: grpc.StatusCode.UNAVAILABLE,
    domain.GmailMessageNotFound: grpc.StatusCode.NOT_FOUND,
    domain.GmailAttachmentNotFound: grpc.StatusCode.NOT_FOUND,
}

# Codes that mean "the caller (or their Google setup) got something wrong":
# logged at INFO, not as server errors (`interceptors.access_log`).
CALLER_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


def status_code_for(exc: domain.MailwatchError) -> grpc.StatusCode:
    """The gRPC code for a domain exception (nearest entry in its MRO)."""
    for cls in type(exc).__mro__:
        code = STATUS_CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL  # unreachable: MailwatchError is in the table


def rich_status(exc: domain.MailwatchError, *, request_id: str | None = None) -> status_pb2.Status:
    """The google.rpc.Status for a domain exception, details included."""
    code = status_code_for(exc)
    status = status_pb2.Status(code=code.value[0], message=exc.message)
    info = error_details_pb2.ErrorInfo(
        reason=exc.reason,
        domain=ERROR_DOMAIN,
        metadata={str(key): str(value) for key, value in _metadata(exc).items()},
    )
    status.details.add().Pack(info)
    violations = _field_violations(exc)
    if violations:
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=violations))
    now = datetime.now(timezone.utc)
    not_before = exc.not_before(now)
    if not_before is not None:
        delay = max(0.0, (not_before - now).total_seconds())
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=_duration(delay)))
    _add_request_info(status, request_id)
    return status


def internal_status(*, request_id: str | None = None) -> status_pb2.Status:
    """The status for an unexpected failure: no detail of what went wrong."""
    message = "internal error"
    if request_id:
        message += f" (request id {request_id})"
    status = status_pb2.Status(code=grpc.StatusCode.INTERNAL.value[0], message=message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=INTERNAL_REASON, domain=ERROR_DOMAIN))
    _add_request_info(status, request_id)
    return status


def as_domain_error(exc: BaseException) -> BaseException:
    """`exc`, or the domain error it stands for when it is not one yet.

    Database errors are classified by exception class / SQLSTATE (in the store
    layer), never by message text.
    """
    if not isinstance(exc, domain.MailwatchError):
        if is_database_unavailable(exc):
            return domain.DatabaseUnavailable()
        if is_concurrency_conflict(exc):
            return domain.ConcurrentUpdate()
    return exc


def status_for(exc: BaseException, *, request_id: str | None = None) -> status_pb2.Status:
    """The google.rpc.Status a caller sees for `exc` (INTERNAL, without detail, for anything unexpected)."""
    exc = as_domain_error(exc)
    if isinstance(exc, domain.MailwatchError) and status_code_for(exc) is not grpc.StatusCode.INTERNAL:
        return rich_status(exc, request_id=request_id)
    return internal_status(request_id=request_id)


def to_grpc_status(exc: BaseException, *, request_id: str | None = None) -> grpc.Status:
    """A `grpc.Status` for `context.abort_with_status` (rich details in trailers)."""
    return rpc_status.to_status(status_for(exc, request_id=request_id))


async def abort_with_error(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    """End the RPC with the status for `exc`; an unexpected one (INTERNAL) is
    logged with its traceback (other failures: the access log interceptor).

    A `grpc.aio.AbortError` (the servicer already aborted) is re-raised as is.
    """
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    request_id = current_request_id()
    status = to_grpc_status(exc, request_id=request_id)
    if status.code is grpc.StatusCode.INTERNAL:
        log.error("unexpected error in RPC", exc_info=exc, extra={"request_id": request_id})
    await context.abort_with_status(status)


def _duration(seconds: float) -> duration_pb2.Duration:
    whole, nanos = divmod(round(seconds * 1_000_000_000), 1_000_000_000)
    return duration_pb2.Duration(seconds=whole, nanos=nanos)


def _metadata(exc: domain.MailwatchError) -> dict[str, str]:
    """ErrorInfo.metadata: the exception's own, plus what only the API can say."""
    metadata = dict(exc.metadata)
    if isinstance(exc, domain.CursorExpired) and exc.pruned_through_sequence is not None:
        # Cursors are an API encoding: the streams layer only knows the watermark.
        metadata["earliest_cursor"] = encode_cursor(exc.pruned_through_sequence).decode("ascii")
    return metadata


def _field_violations(exc: domain.MailwatchError) -> list[error_details_pb2.BadRequest.FieldViolation]:
    if isinstance(exc, domain.InvalidArgument):
        pairs = [(v.field, v.description) for v in exc.violations]
    elif isinstance(exc, domain.InvalidCursor):
        # Cursors only ever arrive in one request field.
        pairs = [(exc.metadata.get("field", "cursor"), exc.message)]
    elif isinstance(exc, domain.GmailLabelRejected):
        # Gmail names the label but not its position in the request.
        pairs = [("label_ids", exc.message)]
    elif isinstance(exc, domain.GmailQueryRejected):
        pairs = [("query", exc.message)]
    else:
        pairs = []
    return [error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in pairs]


def _add_request_info(status: status_pb2.Status, request_id: str | None) -> None:
    if request_id:
        status.details.add().Pack(error_details_pb2.RequestInfo(request_id=request_id))
