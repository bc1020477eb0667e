"""Stand-ins for gRPC calls: failed-call errors with rich status, and scripted streams."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, message: str = "", *details) -> None:
        self._code, self._message = code, message
        self._trailers = ()
        if details:
            status = status_pb2.Status(code=code.value[0], message=message)
            for detail in details:
                status.details.add().Pack(detail)
            self._trailers = rpc_status.to_status(status).trailing_metadata

    def code(self):
        return self._code

    def details(self):
        return self._message

    def trailing_metadata(self):
        return self._trailers


def error_info(reason: str, **metadata) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain="mailwatch.dev", metadata=metadata)


class ScriptedCall:
    """A server-streaming call: yields `responses`, then raises `error` (or ends)."""

    def __init__(self, responses, error: Exception | None = None) -> None:
        self._responses = list(responses)
        self._error = error
        self.cancelled = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.cancelled:
            raise FakeRpcError(grpc.StatusCode.CANCELLED, "cancelled")
        if self._responses:
            return self._responses.pop(0)
        if self._error is not None:
            raise self._error
        raise StopIteration

    def cancel(self):
        self.cancelled = True
        return True

    # grpc.aio flavour
    async def read(self):
        try:
            return next(self)
        except StopIteration:
            return grpc.aio.EOF


class Opener:
    """open_call for a stream: hands out scripted calls in order and records the requests."""

    def __init__(self, *calls: ScriptedCall) -> None:
        self.calls = list(calls)
        self.requests = []

    def __call__(self, request):
        self.requests.append(request)
        if not self.calls:
            raise AssertionError("no more scripted calls")
        return self.calls.pop(0)


class SilentCall(ScriptedCall):
    """A call that never sends anything until cancelled (a half-open connection)."""

    def __init__(self) -> None:
        super().__init__([])
        import threading

        self._cancelled = threading.Event()

    def __next__(self):
        self._cancelled.wait(10)
        raise FakeRpcError(grpc.StatusCode.CANCELLED, "cancelled")

    def cancel(self):
        self.cancelled = True
        self._cancelled.set()
        return True

    async def read(self):
        import asyncio

        await asyncio.Event().wait()  # silent until the reader gives up (the test's idle timeout cancels it)
