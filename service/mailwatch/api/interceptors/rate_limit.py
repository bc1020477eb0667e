"""Each API key's call rate (`UsageLimits.take_call`), as one `grpc.aio` server interceptor.

It runs after authentication (`mailwatch.api.interceptors`), inside the RPC,
for calls made with a tenant API key; the operator's AdminService calls,
health and reflection carry no key and are not counted. A call past the
key's rate raises RpcRateLimited, which the error interceptor outside turns
into RESOURCE_EXHAUSTED with RetryInfo. Opening a stream counts as one call.
"""

from __future__ import annotations

from typing import Any

import grpc

from mailwatch.api.handlers import Behavior, WrappingInterceptor, around, rebuild
from mailwatch.request_context import current_api_key_digest, current_tenant_id
from mailwatch.usage_limits import UsageLimits


class RateLimitInterceptor(WrappingInterceptor):
    def __init__(self, limits: UsageLimits) -> None:
        self._limits = limits

    def wrap_handler(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        async def count(request: Any, context: grpc.aio.ServicerContext) -> Any:
            key = current_api_key_digest()
            if key is not None:
                await self._limits.take_call(current_tenant_id(), key)
            return request

        def wrap(behavior: Behavior) -> Behavior:
            return around(behavior, prepare=count)

        return rebuild(handler, wrap)
