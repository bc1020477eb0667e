"""Local HTTP peers that misbehave on purpose, on real sockets: what the Gmail simulator
cannot do (close a kept-alive connection under a request, answer oversized, gzip, TLS)."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import ssl
import struct
from typing import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawPeer:
    """An asyncio server on 127.0.0.1 whose connections `handler(reader, writer, number)` serves
    (number: 0 for the first connection accepted, 1 for the next, ...)."""

    def __init__(self, handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._handler = handler
        self._ssl = ssl_context
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> "RawPeer":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ssl)
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    def url(self, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}/"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        self._tasks.add(asyncio.current_task())
        try:
            await self._handler(reader, writer, number)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """One request: its request line, headers (lower-cased names) and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    line, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for field in fields:
        if field:
            name, _, value = field.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return line, headers, body


def json_answer(document: dict, *, status: str = "200 OK", compress: bool = False, extra: str = "") -> bytes:
    body = json.dumps(document).encode()
    encoding = ""
    if compress:
        body = gzip.compress(body)
        encoding = "content-encoding: gzip\r\n"
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json; charset=UTF-8\r\n{encoding}{extra}"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of an orderly end of stream."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
