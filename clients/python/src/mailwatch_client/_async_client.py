"""`AsyncMailwatchClient`: the asyncio client (grpc.aio), same surface as `MailwatchClient`
(its RPC methods come from `_calls.CALLS`)."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio

from mailwatch_client import _calls as calls
from mailwatch_client import _common as common
from mailwatch_client._calls import Call
from mailwatch_client._core import ClientCore
from mailwatch_client._errors import from_rpc_error
from mailwatch_client._stream import AsyncChangeStream


class AsyncMailwatchClient(ClientCore):
    """An asyncio client for mailwatch's MailboxService and AdminService.

        async with AsyncMailwatchClient("mailwatch.example.com:443", api_key, tls=True) as client:
            mailbox = await client.register_mailbox("alice@example.com", credentials=oauth)
            async with client.stream_changes(start="earliest") as stream:
                async for event in stream:
                    ...

    Same arguments, defaults, retries and errors as `MailwatchClient`. Create
    it inside the event loop that uses it (grpc.aio channels belong to one loop).
    """

    _channels = grpc.aio
    _change_stream = AsyncChangeStream

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncMailwatchClient":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def _call(self, method, request, *, auth, timeout, metadata, retry, idempotent: bool):
        """`await method(request)` with the call's deadline and metadata, retried as `Attempts` decides."""
        attempts = self._attempts(timeout, retry, idempotent)
        md = common.call_metadata(auth, self._metadata, metadata)
        while True:
            try:
                return await method(request, timeout=attempts.next_timeout(), metadata=md)
            except grpc.RpcError as exc:
                delay = attempts.delay_after(exc)
            await asyncio.sleep(delay)

    def _sender(self, call: Call):
        """The stub's method, or for a streaming answer one that reads and folds every response."""
        method = self._stub_method(call)
        if call.fold is None:
            return method

        async def read_all(request, *, timeout, metadata):
            folded = call.fold(request)
            async for response in method(request, timeout=timeout, metadata=metadata):
                folded.add(response)
            return folded.result()

        return read_all


def _unary(call: Call):
    async def method(self: AsyncMailwatchClient, *args, timeout=common.DEFAULT, metadata=(), retry=None, **kwargs):
        response = await self._call(self._sender(call), call.request(*args, **kwargs), auth=self._auth(call),
                                    timeout=timeout, metadata=metadata, retry=retry, idempotent=call.idempotent)
        return calls.result(call, response)

    return method


def _pages(call: Call):
    async def walk(self: AsyncMailwatchClient, *args, **kwargs):
        list_page = getattr(self, call.name)
        token = ""
        while True:
            page = await list_page(*args, page_token=token, **kwargs)
            for item in page.items:
                yield item
            token = page.next_page_token
            if not token:
                return

    return walk


def _chunks(call: Call):
    async def read(self: AsyncMailwatchClient, *args, timeout=common.DEFAULT, metadata=(), retry=None, **kwargs):
        request = call.request(*args, **kwargs)
        stub = self._stub_method(call)

        async def first_response(request, *, timeout, metadata):
            # Opening the stream and its first response are retried; a later failure is not (the
            # caller already has earlier chunks).
            responses = stub(request, timeout=timeout, metadata=metadata)
            first = await responses.read()
            return responses, None if first is grpc.aio.EOF else first

        responses, first = await self._call(first_response, request, auth=self._auth(call), timeout=timeout,
                                            metadata=metadata, retry=retry, idempotent=call.idempotent)
        reader = call.chunks(request)
        try:
            response = first
            while response is not None:
                data = reader.add(response)
                if data:
                    yield data
                response = await responses.read()
                if response is grpc.aio.EOF:
                    response = None
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            responses.cancel()  # a no-op once the stream ended; frees it when the caller stops early
        reader.result()

    return read


calls.install(AsyncMailwatchClient, _unary, _pages, awaitable=True, chunks=_chunks)
