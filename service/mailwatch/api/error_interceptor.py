"""Error mapping for every RPC, as one `grpc.aio` server interceptor.

Installed first (outermost), so whatever any servicer or inner interceptor
raises ends as the status `mailwatch.api.errors` assigns it: a new RPC cannot
forget it, and no exception text or class reaches a caller as UNKNOWN.

It also owns the two things that happen before any other code of the call:

- the request id (`mailwatch.request_context.start_request`), so even a
  request refused before authentication is logged and answered with it;
- decoding the request. gRPC would deserialize before any interceptor runs
  and answer an undecodable message (`ff ff ff ff`, a truncated field,
  invalid UTF-8 in a string) with UNKNOWN naming the parser's exception; the
  handler is given the raw bytes instead and decoding happens here, where a
  failure is INVALID_ARGUMENT with a field violation.

    server = grpc.aio.server(interceptors=[ErrorInterceptor(), AuthInterceptor(...)])
"""

from __future__ import annotations

from typing import Any, Callable

import grpc

from mailwatch.api.errors import abort_with_error
from mailwatch.api.handlers import Behavior, WrappingInterceptor, around, rebuild
from mailwatch.domain.errors import FieldViolation, InvalidArgument
from mailwatch.request_context import REQUEST_ID_METADATA_KEY, start_request

#: The field a violation names when the request as a whole cannot be decoded.
WHOLE_REQUEST = ""


class ErrorInterceptor(WrappingInterceptor):
    def wrap_handler(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        deserialize = handler.request_deserializer
        streamed = handler.request_streaming

        async def prepare(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start_request(_client_request_id(context))
            if streamed or deserialize is None:
                return request
            return _decode(deserialize, request)

        def wrap(behavior: Behavior) -> Behavior:
            return around(behavior, prepare=prepare, on_error=abort_with_error)

        return rebuild(handler, wrap, raw_unary_requests=True)


def _decode(deserialize: Callable[[bytes], Any], raw: bytes) -> Any:
    try:
        return deserialize(raw)
    except Exception:  # noqa: BLE001 - any parser failure means the bytes are not the request message
        raise InvalidArgument(
            [FieldViolation(WHOLE_REQUEST, "the request is not a valid protobuf message of this method's type")]
        ) from None


def _client_request_id(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_METADATA_KEY:
            return value if isinstance(value, str) else None
    return None
