"""Streaming responses through both interceptors: every response in order, a
failure mid-stream mapped like any other, a cancelled call closes the servicer's stream."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import grpc
import pytest

from mailwatch.api.interceptors import AuthInterceptor, server_interceptors
from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc, resources_pb2

TENANT = "7b0c3c1e-4f5d-4a55-8d6b-1d2e3f405162"
AUTH = (("authorization", "Bearer key-1"),)


class _Streaming(mailbox_service_pb2_grpc.MailboxServiceServicer):
    def __init__(self, count: int, fail_after: int | None = None) -> None:
        self.count, self.fail_after = count, fail_after
        self.closed = asyncio.Event()

    async def StreamChanges(self, request, context):
        try:
            for n in range(self.count):
                if n == self.fail_after:
                    raise RuntimeError("broke mid-stream")
                yield mailbox_service_pb2.StreamChangesResponse(events=[resources_pb2.ChangeEvent(id=str(n))])
            await asyncio.Event().wait()  # then stay open, as a live stream does
        finally:
            self.closed.set()


def _interceptors():
    auth = AuthInterceptor(None)
    auth.cache.put(hashlib.sha256(b"key-1").digest(), uuid.UUID(TENANT))  # a known key: no lookup
    return server_interceptors(auth)


async def _read(call, count):
    return [(await call.read()).events[0].id for _ in range(count)]


async def test_every_response_arrives_in_order_and_a_cancelled_call_closes_the_stream(grpc_serve):
    servicer = _Streaming(200)
    async with grpc_serve((mailbox_service_pb2_grpc.add_MailboxServiceServicer_to_server, servicer),
                          interceptors=_interceptors()) as channel:
        call = mailbox_service_pb2_grpc.MailboxServiceStub(channel).StreamChanges(
            mailbox_service_pb2.StreamChangesRequest(), metadata=AUTH)
        assert await _read(call, 200) == [str(n) for n in range(200)]
        assert not servicer.closed.is_set()
        call.cancel()
        await asyncio.wait_for(servicer.closed.wait(), 30)  # closed by the call's end, not by garbage collection


async def test_a_failure_mid_stream_ends_it_with_the_mapped_status(grpc_serve):
    servicer = _Streaming(10, fail_after=3)
    async with grpc_serve((mailbox_service_pb2_grpc.add_MailboxServiceServicer_to_server, servicer),
                          interceptors=_interceptors()) as channel:
        call = mailbox_service_pb2_grpc.MailboxServiceStub(channel).StreamChanges(
            mailbox_service_pb2.StreamChangesRequest(), metadata=AUTH)
        assert await _read(call, 3) == ["0", "1", "2"]
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call.read()
    assert raised.value.code() is grpc.StatusCode.INTERNAL
    assert "broke" not in raised.value.details()
    assert servicer.closed.is_set()


async def test_an_unauthenticated_stream_sends_nothing(grpc_serve):
    servicer = _Streaming(5)
    async with grpc_serve((mailbox_service_pb2_grpc.add_MailboxServiceServicer_to_server, servicer),
                          interceptors=_interceptors()) as channel:
        call = mailbox_service_pb2_grpc.MailboxServiceStub(channel).StreamChanges(
            mailbox_service_pb2.StreamChangesRequest())
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call.read()
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert not servicer.closed.is_set()  # the servicer never ran


class _Writing(_Streaming):
    """The same servicer in gRPC's reader/writer form (as MailboxServicer.StreamChanges is)."""

    async def StreamChanges(self, request, context):
        try:
            for n in range(self.count):
                if n == self.fail_after:
                    raise RuntimeError("broke mid-stream")
                await context.write(mailbox_service_pb2.StreamChangesResponse(
                    events=[resources_pb2.ChangeEvent(id=str(n))]))
            await asyncio.Event().wait()
        finally:
            self.closed.set()


@pytest.mark.parametrize("servicer_class", [_Streaming, _Writing])
async def test_both_servicer_forms_stream_in_order_fail_mapped_and_close_on_cancel(grpc_serve, servicer_class):
    servicer = servicer_class(50)
    failing = servicer_class(10, fail_after=3)
    for subject, expect_failure in ((servicer, False), (failing, True)):
        async with grpc_serve((mailbox_service_pb2_grpc.add_MailboxServiceServicer_to_server, subject),
                              interceptors=_interceptors()) as channel:
            call = mailbox_service_pb2_grpc.MailboxServiceStub(channel).StreamChanges(
                mailbox_service_pb2.StreamChangesRequest(), metadata=AUTH)
            if not expect_failure:
                assert await _read(call, 50) == [str(n) for n in range(50)]
                call.cancel()
                await asyncio.wait_for(subject.closed.wait(), 30)
                continue
            assert await _read(call, 3) == ["0", "1", "2"]
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call.read()
            assert raised.value.code() is grpc.StatusCode.INTERNAL and "broke" not in raised.value.details()


async def test_layers_run_in_one_coroutine_as_nested_try_blocks_would():
    """Interceptors' wrappings of one method are layers of one coroutine: prepares outermost
    first; an exception reaches the on_error of each layer it passed through, innermost first;
    an exception in a layer's prepare never reaches the layers inside it."""
    from mailwatch.api.handlers import _LAYERS, around

    seen: list[str] = []

    def layer(name: str, *, fail_prepare: bool = False, swallow: bool = False):
        async def prepare(request, context):
            seen.append(f"prepare {name}")
            if fail_prepare:
                raise ValueError(name)
            return request + [name]

        async def on_error(context, exc):
            seen.append(f"on_error {name}: {exc}")
            if not swallow:
                raise exc

        return prepare, on_error

    async def servicer(request, context):
        seen.append(f"servicer {request}")
        raise RuntimeError("servicer")

    def build(*layers):  # innermost first, as interceptors wrap (the last listed is outermost)
        behaviour = servicer
        for prepare, on_error in layers:
            behaviour = around(behaviour, prepare=prepare, on_error=on_error)
        return behaviour

    wrapped = build(layer("inner"), layer("middle"), layer("outer"))
    assert len(getattr(wrapped, _LAYERS)[1]) == 3  # one coroutine, three layers
    with pytest.raises(RuntimeError):
        await wrapped([], None)
    assert seen == ["prepare outer", "prepare middle", "prepare inner", "servicer ['outer', 'middle', 'inner']",
                    "on_error inner: servicer", "on_error middle: servicer", "on_error outer: servicer"]

    seen.clear()
    with pytest.raises(ValueError):
        await build(layer("inner"), layer("middle", fail_prepare=True), layer("outer"))([], None)
    assert seen == ["prepare outer", "prepare middle", "on_error middle: middle", "on_error outer: middle"]

    seen.clear()
    assert await build(layer("inner"), layer("middle", swallow=True), layer("outer"))([], None) is None
    assert seen[-2:] == ["on_error inner: servicer", "on_error middle: servicer"]  # ended there, as it returned
