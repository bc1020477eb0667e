"""Decoding the request message, where a failure can be answered properly.

gRPC would deserialize before any interceptor runs and answer an
undecodable message (`ff ff ff ff`, a truncated field, invalid UTF-8 in a
string) with UNKNOWN naming the parser's exception. The handler is given the
raw bytes instead and decoding happens here: a failure is InvalidArgument,
which the error interceptor (outside this one) makes INVALID_ARGUMENT with a
field violation. Streamed requests are decoded by gRPC as usual.
"""

from __future__ import annotations

from typing import Any, Callable

import grpc

from mailwatch.api.handlers import Behavior, WrappingInterceptor, around, rebuild
from mailwatch.domain.errors import FieldViolation, InvalidArgument

#: The field a violation names when the request as a whole cannot be decoded.
WHOLE_REQUEST = ""


class DecodingInterceptor(WrappingInterceptor):
    def wrap_handler(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        deserialize = handler.request_deserializer
        if handler.request_streaming or deserialize is None:
            return handler

        async def prepare(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return _decode(deserialize, request)

        def wrap(behavior: Behavior) -> Behavior:
            return around(behavior, prepare=prepare)

        return rebuild(handler, wrap, raw_unary_requests=True)


def _decode(deserialize: Callable[[bytes], Any], raw: bytes) -> Any:
    try:
        return deserialize(raw)
    except Exception:  # noqa: BLE001 - any parser failure means the bytes are not the request message
        raise InvalidArgument(
            [FieldViolation(WHOLE_REQUEST, "the request is not a valid protobuf message of this method's type")]
        ) from None
