"""The interceptor list: each failure is logged once, at the level its code deserves,
and an undecodable request or a refused key ends like a servicer's failure."""

from __future__ import annotations

import logging

import grpc
import pytest

from mailwatch.api.interceptors import AuthInterceptor, server_interceptors
from mailwatch.domain import errors as domain
from mailwatch.request_context import REQUEST_ID_METADATA_KEY, RequestContextFilter
from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc
from tests.fixtures.raw_grpc import raw_call
from tests.fixtures.waiting import eventually

GET_MAILBOX = mailbox_service_pb2.DESCRIPTOR.services_by_name["MailboxService"].methods_by_name["GetMailbox"]
REQUEST_ID = "interceptor-test"
METADATA = ((REQUEST_ID_METADATA_KEY, REQUEST_ID),)


@pytest.fixture
def caplog(caplog):
    """Records carry their request id: lines of other tests' calls still ending are left out."""
    caplog.handler.addFilter(RequestContextFilter())
    return caplog


def _records(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records
            if record.name.startswith("mailwatch.api") and getattr(record, "request_id", None) == REQUEST_ID]


def _lines(caplog) -> list[tuple[int, str]]:
    return [(record.levelno, record.getMessage()) for record in _records(caplog)]


async def _logged(caplog, count: int = 1) -> list[tuple[int, str]]:
    """The api's log lines once there are `count` of them: the access log is written after the
    status has gone to the client, so the caller can see its error first on a busy machine."""
    return await eventually(lambda: len(_lines(caplog)) >= count and _lines(caplog), what=f"{count} api log line(s)")


@pytest.mark.parametrize(("exc", "expected"), [
    (domain.NotFound("mailbox not found"), (logging.INFO, "RPC failed: NOT_FOUND: mailbox not found")),
    (domain.DatabaseUnavailable(), (logging.WARNING, "RPC failed: UNAVAILABLE: ")),
])
async def test_a_failed_call_is_logged_once_at_its_level(failing, caplog, exc, expected):
    servicer, stub = failing
    servicer.exc = exc
    with caplog.at_level(logging.INFO, logger="mailwatch.api"):
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetMailbox(mailbox_service_pb2.GetMailboxRequest(), metadata=METADATA)
        [(level, message)] = await _logged(caplog)
    assert (level, message[: len(expected[1])]) == expected


async def test_an_unexpected_error_is_logged_once_with_its_traceback(failing, caplog):
    servicer, stub = failing
    servicer.exc = RuntimeError("boom")
    with caplog.at_level(logging.INFO, logger="mailwatch.api"):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetMailbox(mailbox_service_pb2.GetMailboxRequest(), metadata=METADATA)
        await _logged(caplog)
    assert raised.value.code() is grpc.StatusCode.INTERNAL
    [record] = _records(caplog)
    assert (record.levelno, record.getMessage(), str(record.exc_info[1])) == (logging.ERROR, "unexpected error in RPC", "boom")


async def test_an_undecodable_request_is_refused_before_authentication(grpc_serve, caplog):
    """Decoding runs outside auth: bytes that are no request are INVALID_ARGUMENT even without a key."""
    async with grpc_serve((mailbox_service_pb2_grpc.add_MailboxServiceServicer_to_server,
                           mailbox_service_pb2_grpc.MailboxServiceServicer()),
                          interceptors=server_interceptors(AuthInterceptor(None))) as channel:
        with caplog.at_level(logging.INFO, logger="mailwatch.api"):
            error = await raw_call(channel, GET_MAILBOX.containing_service, GET_MAILBOX, b"\xff\xff\xff\xff",
                                   metadata=METADATA)
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
            unauthenticated = await raw_call(channel, GET_MAILBOX.containing_service, GET_MAILBOX, b"", metadata=METADATA)
            assert unauthenticated.code() is grpc.StatusCode.UNAUTHENTICATED
            lines = await _logged(caplog, 2)
    assert [message.split(":")[1].strip() for _, message in lines] == ["INVALID_ARGUMENT", "UNAUTHENTICATED"]
