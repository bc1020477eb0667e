"""`MailwatchClient`: the synchronous client (its RPC methods come from `_calls.CALLS`)."""

from __future__ import annotations

import itertools
import time

import grpc

from mailwatch_client import _calls as calls
from mailwatch_client import _common as common
from mailwatch_client._calls import Call
from mailwatch_client._core import ClientCore
from mailwatch_client._errors import from_rpc_error
from mailwatch_client._stream import ChangeStream


class MailwatchClient(ClientCore):
    """A blocking client for mailwatch's MailboxService and AdminService.

        with MailwatchClient("mailwatch.example.com:443", api_key, tls=True) as client:
            mailbox = client.register_mailbox("alice@example.com", credentials=oauth)
            for event in client.stream_changes(start="earliest"):
                ...

    `api_key` authenticates MailboxService calls; `operator_token` the admin
    calls. `tls`: False (plaintext, local development), True (system roots) or
    a `TLSConfig`. `timeout` is the default deadline of unary calls in seconds
    (None: none), covering all retry attempts; `retry` their default retry
    policy (UNAVAILABLE, and RESOURCE_EXHAUSTED with RetryInfo after at least
    its delay; idempotent calls only). Every method also takes
    `timeout`, `metadata` and `retry` (used by idempotent calls only). Errors
    are `RPCError` subclasses (exported by `mailwatch_client`).

    A client owns one channel and is safe to share between threads; close it
    (or use it as a context manager) when done.
    """

    _channels = grpc
    _change_stream = ChangeStream

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "MailwatchClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _call(self, method, request, *, auth, timeout, metadata, retry, idempotent: bool):
        """`method(request)` with the call's deadline and metadata, retried as `Attempts` decides."""
        attempts = self._attempts(timeout, retry, idempotent)
        md = common.call_metadata(auth, self._metadata, metadata)
        while True:
            try:
                return method(request, timeout=attempts.next_timeout(), metadata=md)
            except grpc.RpcError as exc:
                delay = attempts.delay_after(exc)
            time.sleep(delay)

    def _sender(self, call: Call):
        """The stub's method, or for a streaming answer one that reads and folds every response."""
        method = self._stub_method(call)
        if call.fold is None:
            return method

        def read_all(request, *, timeout, metadata):
            folded = call.fold(request)
            for response in method(request, timeout=timeout, metadata=metadata):
                folded.add(response)
            return folded.result()

        return read_all


def _unary(call: Call):
    def method(self: MailwatchClient, *args, timeout=common.DEFAULT, metadata=(), retry=None, **kwargs):
        response = self._call(self._sender(call), call.request(*args, **kwargs), auth=self._auth(call),
                              timeout=timeout, metadata=metadata, retry=retry, idempotent=call.idempotent)
        return calls.result(call, response)

    return method


def _pages(call: Call):
    def walk(self: MailwatchClient, *args, **kwargs):
        list_page = getattr(self, call.name)
        token = ""
        while True:
            page = list_page(*args, page_token=token, **kwargs)
            yield from page.items
            token = page.next_page_token
            if not token:
                return

    return walk


def _chunks(call: Call):
    def read(self: MailwatchClient, *args, timeout=common.DEFAULT, metadata=(), retry=None, **kwargs):
        request = call.request(*args, **kwargs)
        stub = self._stub_method(call)

        def first_response(request, *, timeout, metadata):
            # Opening the stream and its first response are retried; a later failure is not (the
            # caller already has earlier chunks).
            responses = stub(request, timeout=timeout, metadata=metadata)
            return responses, next(responses, None)

        responses, first = self._call(first_response, request, auth=self._auth(call), timeout=timeout,
                                      metadata=metadata, retry=retry, idempotent=call.idempotent)
        reader = call.chunks(request)
        try:
            for response in itertools.chain(() if first is None else (first,), responses):
                data = reader.add(response)
                if data:
                    yield data
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            responses.cancel()  # a no-op once the stream ended; frees it when the caller stops early
        reader.result()

    return read


calls.install(MailwatchClient, _unary, _pages, awaitable=False, chunks=_chunks)
