"""One helper for interceptors that wrap a method handler's behaviour.

A `grpc.aio` server interceptor that wants to act inside the RPC (in its task,
with its context, able to end it with a rich status) returns a copy of the
handler whose behaviour is wrapped. The four handler kinds and the two
behaviour shapes (coroutine, async generator) are handled here once; a
wrapped async generator becomes a coroutine writing its responses with
`context.write`, and every interceptor's wrapping of one method runs in one
coroutine (`around`):

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
    """`behavior` run after `prepare` (if any); with `on_error`, any exception of either ends there.

    Wrapping a behaviour that `around` made adds a layer to it instead of a
    coroutine around it: the interceptors' layers of a call run in one
    coroutine frame (`_layered`), as nested try blocks would. A stream's
    task resumes through every frame between it and the servicer each time it
    waits (for a change, for gRPC's write), so six nested wrappers cost six
    frame resumptions per message of every stream; one costs one.
    """
    core, layers = getattr(behavior, _LAYERS, (None, ()))
    if core is None:
        core = _writer(behavior) if inspect.isasyncgenfunction(behavior) else behavior
    return _layered(core, ((prepare, on_error), *layers))


_LAYERS = "_mailwatch_layers"
Layer = tuple["Prepare | None", "OnError | None"]


def _writer(behavior: Behavior) -> Behavior:
    """An async generator servicer as a coroutine that writes its responses itself.

    gRPC's reader/writer form, not an async generator re-yielding them: a
    wrapping generator would add a step per message on every stream."""

    async def writing(request: Any, context: grpc.aio.ServicerContext) -> None:
        async with contextlib.aclosing(behavior(request, context)) as responses:
            async for response in responses:
                await context.write(response)

    return writing


def _layered(core: Behavior, layers: tuple[Layer, ...]) -> Behavior:
    """`core` inside `layers` (outermost first): each layer's prepare in order, then
    `core`; an exception goes to the on_error of each layer it passed through,
    innermost first, exactly as nested `try` blocks would hand it on (an
    on_error raises, usually; one that returns ends the call there)."""

    async def layered(request: Any, context: grpc.aio.ServicerContext):
        entered = 0  # layers whose prepare has completed
        try:
            for prepare, _ in layers:
                if prepare is not None:
                    request = await prepare(request, context)
                entered += 1
            result = core(request, context)
            if inspect.isawaitable(result):  # coroutine behaviours, incl. ones that stream with context.write
                result = await result
            return result
        except Exception as exc:  # noqa: BLE001 - handed to the layers' on_error, the last line of defence
            failure = exc
        for _, on_error in reversed(layers[: entered + 1]):
            if on_error is None:
                continue
            try:
                await on_error(context, failure)
            except Exception as again:  # noqa: BLE001 - what this layer raised goes on outward
                failure = again
                continue
            return None
        raise failure

    setattr(layered, _LAYERS, (core, layers))
    return layered
