"""A real grpc.aio server on port 0 for API unit tests (no database)."""

from __future__ import annotations

import contextlib

import grpc
import pytest

from mailwatch.api.interceptors import server_interceptors
from mailwatch.domain import errors as domain
from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc


@contextlib.asynccontextmanager
async def serve(*servicers, interceptors=()):
    """Start a server with (add_fn, servicer) pairs; yield a channel to it."""
    server = grpc.aio.server(interceptors=list(interceptors))
    for add, servicer in servicers:
        add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


@pytest.fixture
def grpc_serve():
    return serve


class Failing(mailbox_service_pb2_grpc.MailboxServiceServicer):
    """GetMailbox raises whatever `self.exc` is; StreamChanges does so after one response."""

    exc: BaseException = domain.NotFound("mailbox not found")

    async def GetMailbox(self, request, context):
        raise self.exc

    async def StopMailbox(self, request, context):
        await context.abort(grpc.StatusCode.ABORTED, "servicer aborted itself")

    async def StreamChanges(self, request, context):
        yield mailbox_service_pb2.StreamChangesResponse()
        raise self.exc


@pytest.fixture
async def failing():
    """(servicer, stub): a `Failing` servicer behind the production interceptors."""
    servicer = Failing()
    async with serve(
        (mailbox_service_pb2_grpc.add_MailboxServiceServicer_to_server, servicer), interceptors=server_interceptors(None)
    ) as channel:
        yield servicer, mailbox_service_pb2_grpc.MailboxServiceStub(channel)
