"""The ErrorInterceptor covers every RPC of both services, with no per-method decoration.

Servicers are generated from the service descriptors (a method per RPC that
raises), so an RPC added to a .proto is covered here without editing this test.
"""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mailwatch.api.interceptors import server_interceptors
from mailwatch.request_context import REQUEST_ID_METADATA_KEY
from mailwatch.v1 import admin_service_pb2, admin_service_pb2_grpc, mailbox_service_pb2, mailbox_service_pb2_grpc
from tests.fixtures.raw_grpc import raw_call

SECRET = "password=hunter2"
SERVICES = [
    (mailbox_service_pb2.DESCRIPTOR.services_by_name["MailboxService"],
     mailbox_service_pb2_grpc.MailboxServiceServicer, mailbox_service_pb2_grpc.add_MailboxServiceServicer_to_server),
    (admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"],
     admin_service_pb2_grpc.AdminServiceServicer, admin_service_pb2_grpc.add_AdminServiceServicer_to_server),
]
METHODS = [(service, method) for service, _, _ in SERVICES for method in service.methods]
CORRUPT = [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08\xff"]


def _raising_servicer(service, base):
    """A servicer whose every method fails with an unexpected exception carrying a secret."""

    def unary(name):
        async def method(self, request, context):
            raise RuntimeError(f"{SECRET} in {name}")

        return method

    def streaming(name):
        async def method(self, request, context):
            raise RuntimeError(f"{SECRET} in {name}")
            yield  # unreachable: makes this an async generator, as streaming servicers are

        return method

    namespace = {m.name: (streaming if m.server_streaming else unary)(m.name) for m in service.methods}
    return type(f"Raising{service.name}", (base,), namespace)()


@pytest.fixture
async def channel(grpc_serve):
    servicers = [(add, _raising_servicer(service, base)) for service, base, add in SERVICES]
    async with grpc_serve(*servicers, interceptors=server_interceptors(None)) as channel:
        yield channel


def _details(error, message_type):
    for detail in rpc_status.from_call(error).details:
        if detail.Is(message_type.DESCRIPTOR):
            message = message_type()
            detail.Unpack(message)
            return message
    return None


@pytest.mark.parametrize(("service", "method"), METHODS, ids=lambda v: getattr(v, "name", None))
async def test_every_rpc_hides_an_unexpected_exception_behind_internal(channel, service, method):
    error = await raw_call(channel, service, method, b"", metadata=((REQUEST_ID_METADATA_KEY, "req-42"),))
    assert error is not None, "the call succeeded"
    assert error.code() is grpc.StatusCode.INTERNAL
    assert SECRET not in error.details() and "RuntimeError" not in error.details()
    assert _details(error, error_details_pb2.ErrorInfo).reason == "INTERNAL"
    assert _details(error, error_details_pb2.RequestInfo).request_id == "req-42"


@pytest.mark.parametrize("raw", CORRUPT, ids=["ff-ff-ff-ff", "truncated-length", "truncated-varint"])
@pytest.mark.parametrize(("service", "method"), METHODS, ids=lambda v: getattr(v, "name", None))
async def test_every_rpc_answers_undecodable_bytes_with_invalid_argument(channel, service, method, raw):
    error = await raw_call(channel, service, method, raw)
    assert error is not None, "the call succeeded"
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    bad_request = _details(error, error_details_pb2.BadRequest)
    assert bad_request is not None and len(bad_request.field_violations) == 1
    for leak in ("DecodeError", "Wire format", "Error parsing", "Traceback", "Exception"):
        assert leak not in error.details()
