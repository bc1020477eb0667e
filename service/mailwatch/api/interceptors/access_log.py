"""How an RPC ended, logged once per failed call.

A caller's mistake (INVALID_ARGUMENT, NOT_FOUND, …) is an INFO line, any
other failure a WARNING, each naming the code and the details the caller
got. INTERNAL is left to the error interceptor, which logs it with the
exception's traceback, and a call past a tenant's limit to the limiter,
which logs such refusals once a minute per tenant and reason with their
count (`request_context.failure_logged`): a client looping on a refusal
must not write a line per call. Successful calls are not logged: one stream fan-out
would be thousands of lines.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import grpc

from mailwatch.api.errors import CALLER_CODES
from mailwatch.api.handlers import Behavior, WrappingInterceptor, around, rebuild
from mailwatch.request_context import failure_logged

log = logging.getLogger(__name__)


class AccessLogInterceptor(WrappingInterceptor):
    def wrap_handler(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        def wrap(behavior: Behavior) -> Behavior:
            return around(behavior, on_error=_log_failure)

        return rebuild(handler, wrap)


async def _log_failure(context: grpc.aio.ServicerContext, exc: Exception) -> NoReturn:
    if isinstance(exc, grpc.aio.AbortError) and not failure_logged():
        code: Any = context.code()
        if code in CALLER_CODES:
            log.info("RPC failed: %s: %s", code.name, context.details())
        elif isinstance(code, grpc.StatusCode) and code not in (grpc.StatusCode.OK, grpc.StatusCode.INTERNAL):
            log.warning("RPC failed: %s: %s", code.name, context.details())
    raise exc
