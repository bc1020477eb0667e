"""The request id of every RPC, set before any other code of the call runs.

The client's `x-request-id` when well formed, else a fresh one
(`mailwatch.request_context.start_request`); outermost, so even a request
refused before authentication is logged and answered with its id.
"""

from __future__ import annotations

from typing import Any

import grpc

from mailwatch.api.handlers import Behavior, WrappingInterceptor, around, rebuild
from mailwatch.request_context import REQUEST_ID_METADATA_KEY, start_request


class RequestContextInterceptor(WrappingInterceptor):
    def wrap_handler(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        async def prepare(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start_request(_client_request_id(context))
            return request

        def wrap(behavior: Behavior) -> Behavior:
            return around(behavior, prepare=prepare)

        return rebuild(handler, wrap)


def _client_request_id(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_METADATA_KEY:
            return value if isinstance(value, str) else None
    return None
