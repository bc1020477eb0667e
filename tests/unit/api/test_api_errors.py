"""The exception -> status table and the rich details, over a real channel."""

from __future__ import annotations

import logging

import grpc
import psycopg
import psycopg.errors
import pytest
import sqlalchemy.exc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mailwatch.api import errors, tokens
from mailwatch.domain import errors as domain
from mailwatch.v1 import mailbox_service_pb2

C = grpc.StatusCode

TABLE = [
    (domain.InvalidArgument([domain.FieldViolation("email_address", "required")]), C.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    (domain.Unauthenticated("no key"), C.UNAUTHENTICATED, "UNAUTHENTICATED"),
    (domain.PermissionDenied("no"), C.PERMISSION_DENIED, "PERMISSION_DENIED"),
    (domain.NotFound("mailbox not found"), C.NOT_FOUND, "NOT_FOUND"),
    (domain.AlreadyExists("tenant exists"), C.ALREADY_EXISTS, "ALREADY_EXISTS"),
    (domain.NoDefaultCredentials("no defaults"), C.FAILED_PRECONDITION, "NO_DEFAULT_CREDENTIALS"),
    (domain.MailboxStopped("stopped"), C.FAILED_PRECONDITION, "MAILBOX_STOPPED"),
    (domain.CursorExpired("too old"), C.FAILED_PRECONDITION, "CURSOR_EXPIRED"),
    (domain.InvalidCursor("bad cursor"), C.INVALID_ARGUMENT, "INVALID_CURSOR"),
    (domain.SecretsNotConfigured("no key"), C.FAILED_PRECONDITION, "SECRETS_NOT_CONFIGURED"),
    (domain.CredentialUndecryptable("bad token"), C.FAILED_PRECONDITION, "CREDENTIAL_UNDECRYPTABLE"),
    (domain.GmailError("gmail?"), C.UNAVAILABLE, "GMAIL_ERROR"),
    (domain.GmailAuthFailed("invalid_grant"), C.FAILED_PRECONDITION, "GMAIL_AUTH_FAILED"),
    (domain.GmailPermissionDenied("not delegated"), C.FAILED_PRECONDITION, "GMAIL_PERMISSION_DENIED"),
    (domain.GmailAddressMismatch("another user"), C.FAILED_PRECONDITION, "GMAIL_ADDRESS_MISMATCH"),
    (domain.GmailAccessRefused("domainPolicy"), C.FAILED_PRECONDITION, "GMAIL_ACCESS_REFUSED"),
    (domain.GmailClockSkew("iat and exp"), C.UNAVAILABLE, "GMAIL_CLOCK_SKEW"),
    (domain.GmailTopicNotPublishable("topic"), C.FAILED_PRECONDITION, "GMAIL_TOPIC_NOT_PUBLISHABLE"),
    (domain.TopicProjectMismatch.between(topic="projects/a/topics/t", credentials_project="b"),
     C.FAILED_PRECONDITION, "TOPIC_PROJECT_MISMATCH"),
    (domain.GmailPushClientConflict("only one"), C.FAILED_PRECONDITION, "GMAIL_PUSH_CLIENT_CONFLICT"),
    (domain.GmailRateLimited("slow down", retry_after=2.5), C.RESOURCE_EXHAUSTED, "GMAIL_RATE_LIMITED"),
    (domain.GmailUnavailable("503"), C.UNAVAILABLE, "GMAIL_UNAVAILABLE"),
    (domain.GmailHistoryExpired("404"), C.FAILED_PRECONDITION, "GMAIL_HISTORY_EXPIRED"),
    (domain.GmailBadRequest("400"), C.FAILED_PRECONDITION, "GMAIL_BAD_REQUEST"),
    (domain.GmailLabelRejected("400"), C.INVALID_ARGUMENT, "GMAIL_LABEL_REJECTED"),
    (domain.GmailQueryRejected("400"), C.INVALID_ARGUMENT, "GMAIL_QUERY_REJECTED"),
    (domain.GmailMailboxNotFound("no such user"), C.FAILED_PRECONDITION, "GMAIL_MAILBOX_NOT_FOUND"),
    (domain.DatabaseUnavailable(), C.UNAVAILABLE, "DATABASE_UNAVAILABLE"),
    (domain.ConcurrentUpdate(), C.ABORTED, "CONCURRENT_UPDATE"),
    (domain.NotMigrated("schema at 0001"), C.UNAVAILABLE, "NOT_MIGRATED"),
    (domain.AdminDisabled("no operator token"), C.PERMISSION_DENIED, "ADMIN_DISABLED"),
    (domain.GmailMessageNotFound("gone"), C.NOT_FOUND, "MESSAGE_NOT_FOUND"),
    (domain.GmailAttachmentNotFound("400"), C.NOT_FOUND, "ATTACHMENT_NOT_FOUND"),
    (domain.LimitExceeded("over", retry_after=1.0), C.RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED"),
    (domain.TenantStreamLimit("streams", retry_after=5.0), C.RESOURCE_EXHAUSTED, "TENANT_STREAM_LIMIT"),
    (domain.RpcRateLimited("calls", retry_after=0.25), C.RESOURCE_EXHAUSTED, "RPC_RATE_LIMITED"),
    (domain.RegistrationRateLimited("registrations", retry_after=20.0), C.RESOURCE_EXHAUSTED,
     "REGISTRATION_RATE_LIMITED"),
    (domain.RegistrationBatchOverLimit("batch"), C.FAILED_PRECONDITION, "REGISTRATION_BATCH_OVER_LIMIT"),
]


def _domain_exception_classes():
    pending, found = [domain.MailwatchError], set()
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    return {cls for cls in found if cls.__module__ == domain.__name__}


def test_every_domain_exception_has_an_entry():
    assert _domain_exception_classes() <= set(errors.STATUS_CODES)


def test_table_covers_every_class():
    assert {type(exc) for exc, _, _ in TABLE} | {domain.MailwatchError} == _domain_exception_classes()


@pytest.mark.parametrize(("exc", "code", "reason"), TABLE, ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None)
def test_status_code_and_error_info(exc, code, reason):
    assert errors.status_code_for(exc) is code
    status = errors.rich_status(exc)
    assert status.code == code.value[0]
    assert status.message == exc.message
    info = _detail(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == (reason, "mailwatch.dev")


def test_every_invalid_argument_carries_field_violations():
    """The API contract: a client can always tell which field to fix."""
    for exc, code, _ in TABLE:
        if code is C.INVALID_ARGUMENT:
            bad_request = _detail(errors.rich_status(exc), error_details_pb2.BadRequest)
            assert bad_request is not None and bad_request.field_violations, type(exc).__name__


def test_a_rejected_label_points_at_label_ids():
    exc = domain.GmailLabelRejected("Gmail refused the label filter: Invalid label: Label_424242")
    bad_request = _detail(errors.rich_status(exc), error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [("label_ids", exc.message)]


def test_a_rejected_query_points_at_query():
    exc = domain.GmailQueryRejected("Gmail refused the query: Invalid query: 'filename:'")
    bad_request = _detail(errors.rich_status(exc), error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [("query", exc.message)]


def test_cursor_expired_names_the_earliest_cursor():
    # The streams layer knows only the watermark; cursors are the API's encoding.
    status = errors.rich_status(domain.CursorExpired("too old", pruned_through_sequence=40))
    info = _detail(status, error_details_pb2.ErrorInfo)
    assert dict(info.metadata) == {"pruned_through_sequence": "40", "earliest_cursor": "AQAAAAAAAAAo"}
    assert tokens.decode_cursor(info.metadata["earliest_cursor"]) == 40


def test_subclass_without_entry_inherits_nearest_code():
    class QuotaSomething(domain.GmailRateLimited):
        reason = "GMAIL_QUOTA_SOMETHING"

    assert errors.status_code_for(QuotaSomething("x")) is C.RESOURCE_EXHAUSTED


def test_bad_request_lists_every_violation():
    exc = domain.InvalidArgument(
        [domain.FieldViolation("email_address", "required"), domain.FieldViolation("label_ids[1]", "duplicate")]
    )
    bad_request = _detail(errors.rich_status(exc), error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("email_address", "required"),
        ("label_ids[1]", "duplicate"),
    ]


def test_invalid_cursor_names_the_cursor_field():
    bad_request = _detail(errors.rich_status(domain.InvalidCursor("garbage")), error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [("cursor", "garbage")]


def test_metadata_and_retry_info_and_request_info():
    exc = domain.GmailRateLimited("slow down", retry_after=2.25, metadata={"mailboxId": "m1"})
    status = errors.rich_status(exc, request_id="req-1")
    assert dict(_detail(status, error_details_pb2.ErrorInfo).metadata) == {"mailboxId": "m1"}
    retry = _detail(status, error_details_pb2.RetryInfo)
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (2, 250_000_000)
    assert _detail(status, error_details_pb2.RequestInfo).request_id == "req-1"


def test_no_retry_info_without_retry_after():
    status = errors.rich_status(domain.GmailRateLimited("slow down"))
    assert not any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)


def test_base_mailwatch_error_is_internal_without_its_message():
    status = errors.to_grpc_status(domain.MailwatchError("secret detail"))
    assert status.code is C.INTERNAL
    assert "secret" not in status.details


# --- over a real channel ---------------------------------------------------------


@pytest.mark.parametrize(("exc", "code", "reason"), TABLE, ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None)
async def test_unary_round_trip(failing, exc, code, reason):
    servicer, stub = failing
    servicer.exc = exc
    call = stub.GetMailbox(mailbox_service_pb2.GetMailboxRequest())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() is code
    status = rpc_status.from_call(raised.value)
    assert status is not None
    assert _detail(status, error_details_pb2.ErrorInfo).reason == reason


async def test_streaming_round_trip_after_a_response(failing):
    servicer, stub = failing
    servicer.exc = domain.CursorExpired("cursor is older than retention", metadata={"oldestCursor": "AQ"})
    call = stub.StreamChanges(mailbox_service_pb2.StreamChangesRequest())
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for response in call:
            received.append(response)
    assert len(received) == 1
    assert raised.value.code() is C.FAILED_PRECONDITION
    info = _detail(rpc_status.from_call(raised.value), error_details_pb2.ErrorInfo)
    assert (info.reason, dict(info.metadata)) == ("CURSOR_EXPIRED", {"oldestCursor": "AQ"})


async def test_bad_request_round_trip(failing):
    servicer, stub = failing
    servicer.exc = domain.InvalidArgument([domain.FieldViolation("page_size", "must not be negative")])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetMailbox(mailbox_service_pb2.GetMailboxRequest())
    bad_request = _detail(rpc_status.from_call(raised.value), error_details_pb2.BadRequest)
    assert bad_request.field_violations[0].field == "page_size"


async def test_unexpected_exception_is_internal_logged_and_not_leaked(failing, caplog):
    servicer, stub = failing
    servicer.exc = RuntimeError("password=hunter2 in a stack frame")
    with caplog.at_level(logging.ERROR, logger="mailwatch.api.errors"):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetMailbox(mailbox_service_pb2.GetMailboxRequest())
    assert raised.value.code() is C.INTERNAL
    assert "hunter2" not in raised.value.details()
    status = rpc_status.from_call(raised.value)
    assert _detail(status, error_details_pb2.ErrorInfo).reason == "INTERNAL"
    assert any(record.exc_info and "hunter2" in str(record.exc_info[1]) for record in caplog.records)


async def test_unexpected_exception_in_stream_is_internal(failing):
    servicer, stub = failing
    servicer.exc = KeyError("boom")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in stub.StreamChanges(mailbox_service_pb2.StreamChangesRequest()):
            pass
    assert raised.value.code() is C.INTERNAL


async def test_servicer_abort_passes_through(failing):
    _, stub = failing
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.StopMailbox(mailbox_service_pb2.StopMailboxRequest())
    assert (raised.value.code(), raised.value.details()) == (C.ABORTED, "servicer aborted itself")


def _detail(status, message_type):
    for detail in status.details:
        if detail.Is(message_type.DESCRIPTOR):
            message = message_type()
            detail.Unpack(message)
            return message
    raise AssertionError(f"no {message_type.DESCRIPTOR.name} in {status}")


def _wrapped(dbapi_error: BaseException) -> BaseException:
    """What SQLAlchemy raises around a psycopg error."""
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, dbapi_error)


@pytest.mark.parametrize(
    "exc",
    [
        _wrapped(psycopg.OperationalError("connection failed: Connection refused")),  # no SQLSTATE: libpq level
        _wrapped(psycopg.errors.AdminShutdown("terminating connection due to administrator command")),
        _wrapped(psycopg.errors.CannotConnectNow("the database system is shutting down")),
        _wrapped(psycopg.errors.ConnectionFailure("x")),
        psycopg.errors.CrashShutdown("x"),
        # every pooled connection in use for the pool's whole timeout
        sqlalchemy.exc.TimeoutError("QueuePool limit of size 2 overflow 0 reached, connection timed out"),
    ],
    ids=lambda e: type(getattr(e, "orig", e)).__name__,
)
def test_database_unavailability_is_unavailable_with_a_retry_hint(exc):
    assert errors.to_grpc_status(exc).code is C.UNAVAILABLE
    packed = errors.rich_status(errors.as_domain_error(exc)).details
    retry = [d for d in packed if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(retry) == 1


@pytest.mark.parametrize(
    "exc",
    [
        _wrapped(psycopg.errors.DeadlockDetected("deadlock detected")),
        _wrapped(psycopg.errors.SerializationFailure("could not serialize access")),
        psycopg.errors.DeadlockDetected("x"),
    ],
    ids=lambda e: type(getattr(e, "orig", e)).__name__,
)
def test_a_transaction_lost_to_a_concurrent_one_is_aborted_with_a_retry_hint(exc):
    status = errors.status_for(exc)
    assert status.code == C.ABORTED.value[0]
    assert _detail(status, error_details_pb2.ErrorInfo).reason == "CONCURRENT_UPDATE"
    assert _detail(status, error_details_pb2.RetryInfo).retry_delay.ToTimedelta().total_seconds() > 0


@pytest.mark.parametrize(
    "exc",
    [
        _wrapped(psycopg.errors.QueryCanceled("statement timeout")),  # 57014: not an outage
        _wrapped(psycopg.errors.UniqueViolation("dup")),
        ValueError("connection refused"),  # message text alone proves nothing
    ],
    ids=lambda e: type(getattr(e, "orig", e)).__name__,
)
def test_other_failures_stay_internal(exc):
    assert errors.to_grpc_status(exc).code is C.INTERNAL
