"""A real grpc.aio server on port 0 for API unit tests (no database)."""

from __future__ import annotations

import contextlib

import grpc
import pytest


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
