"""Corrupt request bytes on every RPC of the real server: INVALID_ARGUMENT, no internals.

Sent as raw bytes over a real channel with a generic call, as a broken or
hostile client would; the methods come from the service descriptors, so a new
RPC is covered without editing this test.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mailwatch.v1 import admin_service_pb2, mailbox_service_pb2
from tests.fixtures.service import OPERATOR_TOKEN
from tests.fixtures.raw_grpc import raw_call
from tests.fixtures.rpc import error_details

pytestmark = pytest.mark.integration

MAILBOX_SERVICE = mailbox_service_pb2.DESCRIPTOR.services_by_name["MailboxService"]
ADMIN_SERVICE = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"]
LEAKS = ("DecodeError", "Wire format", "Error parsing", "Traceback", "Exception", "Unexpected", "<class")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _corrupt_payloads(method) -> list[bytes]:
    """ff ff ff ff, a truncated length-delimited field, a truncated varint, and
    invalid UTF-8 in the request's first string field (when it has one)."""
    payloads = [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x08\xff"]
    strings = [f for f in method.input_type.fields if f.type == FieldDescriptor.TYPE_STRING]
    if strings:
        payloads.append(_varint(strings[0].number << 3 | 2) + b"\x02\xc3\x28")
    return payloads


async def test_every_rpc_refuses_corrupt_bytes_with_invalid_argument(service):
    _, tenant_auth = await service.new_tenant()
    operator_auth = [("authorization", f"Bearer {OPERATOR_TOKEN}")]
    covered = []
    for svc, auth in ((MAILBOX_SERVICE, tenant_auth), (ADMIN_SERVICE, operator_auth)):
        for method in svc.methods:
            for raw in _corrupt_payloads(method):
                error = await raw_call(service.channel, svc, method, raw, auth)
                assert error is not None, "the call succeeded"
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method.name, raw, error.details())
                _, bad_request = error_details(error)
                assert bad_request is not None and bad_request.field_violations, (method.name, raw)
                for leak in LEAKS:
                    assert leak not in error.details(), (method.name, raw, error.details())
            covered.append(method.name)
    assert len(covered) == len(MAILBOX_SERVICE.methods) + len(ADMIN_SERVICE.methods)

    health = await health_pb2_grpc.HealthStub(service.channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
