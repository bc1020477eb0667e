"""One helper for interceptors that wrap a method handler's behaviour.

A `grpc.aio` server interceptor that wants to act inside the RPC (in its task,
with its context, able to end it with a rich status) returns a copy of the
handler whose behaviour is wrapped. The four handler kinds and the two
behaviour shapes (coroutine, async generator) are handled here once; a
wrapped async generator becomes a coroutine writing its responses with
`context.write`:

    class Checking(WrappingInterceptor):
        def wrap_handler(self, handler, method):
            return rebuild(handler, lambda behavior: around(behavior, prepare=check))
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Awaitable, Callable, NoReturn

import grpc

Behavior = Callable[..., Any]
# Runs first, inside the RPC; returns the request the behaviour gets (possibly transformed).
Prepare = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
# Ends the RPC for an exception (by aborting it).
OnError = Callable[[grpc.aio.ServicerContext, Exception], Awaitable[NoReturn]]


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that returns each known method's handler, wrapped."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # unknown method: gRPC answers UNIMPLEMENTED
        return self.wrap_handler(handler, handler_call_details.method)

    def wrap_handler(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """`handler` as this interceptor wants it run; `method` is "/package.Service/Method"."""
        raise NotImplementedError


def rebuild(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Behavior], Behavior], *, raw_unary_requests: bool = False
) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour passed through `wrap`.

    With `raw_unary_requests`, a single (non-streamed) request reaches the
    wrapped behaviour as the bytes off the wire, undeserialized, so the
    wrapper decides what an undecodable request answers.
    """
    deserializer = handler.request_deserializer
    if raw_unary_requests and not handler.request_streaming:
        deserializer = None
    codec = {"request_deserializer": deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary), **codec)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream), **codec)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary), **codec)
    return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream), **codec)


def around(behavior: Behavior, *, prepare: Prepare | None = None, on_error: OnError | None = None) -> Behavior:
    """`behavior` run after `prepare` (if any); with `on_error`, any exception of either ends there."""
    if inspect.isasyncgenfunction(behavior):

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> None:
            # A coroutine that writes the servicer's responses itself (gRPC's
            # reader/writer form), not an async generator re-yielding them: every
            # wrapping generator added a step per message, per interceptor, on every
            # stream (a commit fanned out to 1,000 streams paid it 1,000 times).
            # Wrapped again by an outer interceptor, this is a plain coroutine
            # (`single` below): the layers cost nothing per message.
            try:
                if prepare is not None:
                    request = await prepare(request, context)
                async with contextlib.aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        await context.write(response)
            except Exception as exc:  # noqa: BLE001 - handed to on_error, the last line of defence
                if on_error is None:
                    raise
                await on_error(context, exc)

        return streaming

    async def single(request: Any, context: grpc.aio.ServicerContext):
        try:
            if prepare is not None:
                request = await prepare(request, context)
            result = behavior(request, context)
            if inspect.isawaitable(result):  # coroutine behaviours, incl. ones that stream with context.write
                result = await result
            return result
        except Exception as exc:  # noqa: BLE001
            if on_error is None:
                raise
            await on_error(context, exc)

    return single
