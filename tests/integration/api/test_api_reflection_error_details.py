"""Error details are readable by tools that know only what server reflection tells them.

grpcurl decodes a status's `google.protobuf.Any` details by asking the server's reflection
for the file that defines each type (FileContainingSymbol). These tests do what it does with
grpcio-reflection's own client: a descriptor pool fed only by the running server, separate
from this process's generated classes, decodes the details of a real error. `buf curl` is run
against the same server too: it finds the RPC through reflection and prints every detail
with its type; it prints a detail decoded only for types compiled into buf itself (its error
printer does not ask reflection), so there the value is decoded here.
"""

from __future__ import annotations

import asyncio
import base64
import json

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from mailwatch.secrets import generate_key
from mailwatch.v1 import mailbox_service_pb2
from tests.fixtures.buf import buf_executable
from tests.fixtures.processes import ServiceProcess

pytestmark = pytest.mark.integration

DETAIL_TYPES = sorted(m.full_name for m in error_details_pb2.DESCRIPTOR.message_types_by_name.values())


def _decode_as_a_reflection_client(target: str, status: status_pb2.Status) -> dict[str, dict]:
    """Each detail, decoded with message types resolved through the server's reflection alone."""
    with grpc.insecure_channel(target) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        decoded = {}
        for detail in status.details:
            name = detail.type_url.rsplit("/", 1)[-1]
            message = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))()
            message.ParseFromString(detail.value)
            decoded[name] = json_format.MessageToDict(message)
        return decoded


def _resolve_every_detail_type(target: str) -> dict[str, str]:
    with grpc.insecure_channel(target) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        return {name: pool.FindMessageTypeByName(name).file.name for name in DETAIL_TYPES}


async def _invalid_argument(service) -> tuple[list, grpc.aio.AioRpcError]:
    _, auth = await service.new_tenant()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.mailboxes.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(page_size=-1), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return auth, caught.value


async def test_reflection_serves_every_google_rpc_error_detail_type(service):
    # The reflection client is blocking; the server runs on this event loop, so it calls from a thread.
    files = await asyncio.to_thread(_resolve_every_detail_type, service.target)
    assert {"google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RetryInfo", "google.rpc.RequestInfo"} <= set(files)
    assert set(files.values()) == {"google/rpc/error_details.proto"}


@pytest.mark.e2e
def test_mailwatch_serve_reflects_the_detail_types_before_any_error(database_url):
    """In a process of its own, whose descriptor pool holds only what the server imports
    (this test process has imported error_details_pb2 itself)."""
    service = ServiceProcess({
        "MAILWATCH_DATABASE_URL": database_url,
        "MAILWATCH_SECRET_KEYS": generate_key(),
        "MAILWATCH_PUBSUB_TOPIC": "projects/p/topics/t",
        "MAILWATCH_LISTEN": "127.0.0.1:0",
        "MAILWATCH_LOG_FORMAT": "text",
    }).start()
    try:
        files = _resolve_every_detail_type(service.target)
    finally:
        service.terminate()
        service.kill()
    assert set(files) == set(DETAIL_TYPES) and set(files.values()) == {"google/rpc/error_details.proto"}


async def test_a_reflection_client_decodes_an_errors_details(service):
    _, error = await _invalid_argument(service)
    raw = dict(error.trailing_metadata())["grpc-status-details-bin"]
    decoded = await asyncio.to_thread(_decode_as_a_reflection_client, service.target, status_pb2.Status.FromString(raw))
    assert decoded["google.rpc.ErrorInfo"] == {"reason": "INVALID_ARGUMENT", "domain": "mailwatch.dev"}
    assert decoded["google.rpc.BadRequest"]["fieldViolations"] == [
        {"field": "page_size", "description": "must not be negative"}
    ]
    assert decoded["google.rpc.RequestInfo"]["requestId"]


async def test_buf_curl_calls_through_reflection_and_prints_the_details(service):
    auth, _ = await _invalid_argument(service)
    process = await asyncio.create_subprocess_exec(
        str(buf_executable()), "curl", "--protocol", "grpc", "--http2-prior-knowledge",
        "-H", f"{auth[0][0]}: {auth[0][1]}", "-d", json.dumps({"page_size": -1}),
        f"http://{service.target}/mailwatch.v1.MailboxService/ListMailboxes",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode != 0 and not stdout
    printed = json.loads(stderr)
    assert printed["code"] == "invalid_argument" and printed["message"] == "page_size: must not be negative"
    details = {detail["type"]: detail["value"] for detail in printed["details"]}
    assert {"google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RequestInfo"} <= details.keys()
    value = details["google.rpc.ErrorInfo"]
    info = error_details_pb2.ErrorInfo.FromString(base64.b64decode(value + "=" * (-len(value) % 4)))
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "mailwatch.dev")
