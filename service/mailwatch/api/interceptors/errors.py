"""Every exception of an RPC -> the status `mailwatch.api.errors` assigns it.

Whatever a servicer or an inner interceptor raises ends here, so a new RPC
cannot forget it, and no exception text or class reaches a caller as
UNKNOWN. An unexpected exception (INTERNAL) is logged with its traceback.
"""

from __future__ import annotations

import grpc

from mailwatch.api.errors import abort_with_error
from mailwatch.api.handlers import Behavior, WrappingInterceptor, around, rebuild


class ErrorInterceptor(WrappingInterceptor):
    def wrap_handler(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        def wrap(behavior: Behavior) -> Behavior:
            return around(behavior, on_error=abort_with_error)

        return rebuild(handler, wrap)
