"""HTTP/1.1 exchanges on the event loop, for the Gmail calls google-api-python-client builds.

A keep-alive connection pool per (scheme, host, port), each connection an asyncio
Protocol whose bytes httptools (uvicorn's C parser) reads, so a call costs no pool
thread, no GIL hand-off and no future crossing threads. The answer comes back as an
`httplib2.Response` and bytes, what google-api-python-client's model and `HttpError`
read, so a call's errors are classified as they are for httplib2's.

What httplib2 did for these calls and this keeps: TLS verified against httplib2's CA
store, a timeout per call (here for the whole exchange, connect included), a kept-alive
connection found closed retried once on a new one (idempotent methods only, as a POST may
have been received), 1xx answers before the final one skipped, gzip/deflate answers
decoded. What it does not do: proxies (`loop_transport_for` leaves such deployments on
httplib2) and redirects (Gmail's API answers none; a 3xx is an HttpError like any answer
>= 300). Answers are bounded.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

import httplib2
import httptools

# An answer larger than this is refused (as unavailable): Gmail's largest, a raw
# message of 35 MB in base64url, stays well under it.
MAX_BODY_BYTES = 128 * 1024 * 1024
MAX_HEADER_BYTES = 256 * 1024
# Idle keep-alive connections kept per origin; more are closed when they come back.
MAX_IDLE_PER_ORIGIN = 64
# A connection idle longer than this is closed instead of reused: middleboxes forget idle TCP
# connections without telling either end (Compute Engine's firewall after 10 minutes, Cloud
# NAT after 20 by default, Azure's load balancer after 4), and a request sent on one waits
# out the call's timeout for an answer that never comes. The most recently returned is
# reused first, so only a burst reaches the long-idle ones. (Go's http.Transport closes
# idle connections at 90 s too.)
MAX_IDLE_SECONDS = 90.0
# A connection found dead when reused is retried on a new one only for these.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class TransportError(ConnectionError):
    """The exchange failed on the wire (classified as Gmail unavailable, as a socket error is)."""


class _StaleConnection(TransportError):
    """A reused connection closed before any byte of the answer came."""


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int
    host_header: str


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one exchange at a time, parsed as its bytes arrive."""

    def __init__(self, pool: "ConnectionPool", origin: Origin) -> None:
        self._pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._started = False
        self._headers_done = False
        self.reused = False
        self.closed = False
        self.idle_since = 0.0

    # --- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes while idle: the peer is not speaking HTTP/1.1 to us
            self.abort()
            return
        self._started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # A callback's own refusal (a size bound) comes wrapped in the parser's error.
            cause = exc.__context__ if isinstance(exc.__context__, TransportError) else None
            self._fail(cause or TransportError(f"unreadable HTTP answer: {exc}"))
            self.abort()
            return
        if not self._headers_done:
            # httptools holds a status line or a header until it ends (`on_header` sees it whole),
            # so a head that never ends is bounded here, by the bytes that have not finished it.
            self._unfinished_head_bytes += len(data)
            if self._unfinished_head_bytes > MAX_HEADER_BYTES:
                self._fail(TransportError("answer headers too large"))
                self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if exc is None and self._headers_done and not self._length_known():
            self._complete()  # an answer without a length ends when the connection does, in order
            return
        if not self._started and self.reused:
            self._fail(_StaleConnection("kept-alive connection closed before the answer"))
        else:
            self._fail(TransportError(f"connection closed during the exchange: {exc or 'end of stream'}"))

    # --- httptools callbacks -------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise TransportError("answer headers too large")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > MAX_BODY_BYTES:
            raise TransportError(f"answer larger than {MAX_BODY_BYTES} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:
            self._interim_ended()
        else:
            self._complete()

    def _interim_ended(self) -> None:
        """A 1xx answer (100 Continue, 103 Early Hints) came before the final one, which the parser
        reads next: a client must accept them unasked (RFC 9110 15.2). Header bytes still count."""
        self._status = 0
        self._reason = b""
        self._headers = []
        self._headers_done = False

    # --- the exchange --------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future:
        self._parser = httptools.HttpResponseParser(self)
        self._waiter = self._pool.loop.create_future()
        self._status = 0
        self._reason = b""
        self._headers = []
        self._header_bytes = 0
        self._unfinished_head_bytes = 0
        self._body = []
        self._body_bytes = 0
        self._started = False
        self._headers_done = False
        self.transport.write(request)
        return self._waiter

    def _length_known(self) -> bool:
        return any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self._headers)

    def _complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        keep = not self.closed and self._parser.should_keep_alive()
        waiter.set_result((self._status, self._reason, self._headers, b"".join(self._body), keep))

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def abort(self) -> None:
        """Close now; an exchange still waiting fails (closed by this end: neither complete
        nor stale, whatever the parser had so far)."""
        self._fail(TransportError("connection closed by this client"))
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class ConnectionPool:
    """Keep-alive HTTP/1.1 connections per origin, for the calls of one event loop."""

    def __init__(self, *, timeout: float, ssl_context: ssl.SSLContext | None = None) -> None:
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._origins: dict[str, Origin] = {}
        self._closed = False
        self.loop: asyncio.AbstractEventLoop | None = None

    async def request(self, method: str, uri: str, headers: dict, body: bytes | str | None
                      ) -> tuple[httplib2.Response, bytes]:
        """One exchange: the answer's status and headers as httplib2 gives them, and its decoded body.
        Raises TransportError (a ConnectionError) or TimeoutError when the wire fails."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        origin, target = self._split(uri)
        if isinstance(body, str):
            body = body.encode()
        wire = _request_bytes(method, target, origin.host_header, headers, body)
        async with asyncio.timeout(self._timeout):
            try:
                status, reason, raw_headers, content, keep = await self._exchange(origin, wire, reuse=True)
            except _StaleConnection:
                if method not in IDEMPOTENT:
                    raise
                status, reason, raw_headers, content, keep = await self._exchange(origin, wire, reuse=False)
        return _response(status, reason, raw_headers, content)

    async def _exchange(self, origin: Origin, wire: bytes, *, reuse: bool):
        connection = self._take_idle(origin) if reuse else None
        if connection is None:
            connection = await self._connect(origin)
        self._busy.add(connection)
        try:
            answer = await connection.send(wire)
        except BaseException:
            connection.abort()  # cancelled or failed mid-exchange: its state is unknown
            raise
        finally:
            self._busy.discard(connection)
        if answer[4] and not self._closed:
            self._give_back(connection)
        else:
            connection.abort()
        return answer

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        stale_before = self.loop.time() - MAX_IDLE_SECONDS
        while idle and idle[0].idle_since < stale_before:  # oldest first: given back in that order
            idle.pop(0).abort()
        while idle:
            connection = idle.pop()
            if not connection.closed and not connection.transport.is_closing():
                connection.reused = True
                return connection
        return None

    def _give_back(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            connection.abort()
        else:
            connection.idle_since = self.loop.time()
            idle.append(connection)

    async def _connect(self, origin: Origin) -> _Connection:
        if self._closed:  # nothing goes out after close() (idle connections are gone with it)
            raise TransportError("the connection pool is closed")
        secure = origin.scheme == "https"
        if secure and self._ssl_context is None:
            self._ssl_context = verified_context()
        _, connection = await self.loop.create_connection(
            lambda: _Connection(self, origin), origin.host, origin.port,
            ssl=self._ssl_context if secure else None, server_hostname=origin.host if secure else None,
        )
        if self._closed:  # closed while connecting
            connection.abort()
            raise TransportError("the connection pool is closed")
        return connection

    def forget(self, connection: _Connection) -> None:
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)

    def _split(self, uri: str) -> tuple[Origin, str]:
        scheme_end = uri.index("://") + 3
        path_start = uri.find("/", scheme_end)
        if path_start < 0:
            authority, target = uri[scheme_end:], "/"
        else:
            authority, target = uri[scheme_end:path_start], uri[path_start:]
        key = uri[:scheme_end] + authority
        origin = self._origins.get(key)
        if origin is None:
            parts = urlsplit(key)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {key}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            origin = self._origins[key] = Origin(parts.scheme, parts.hostname, port, authority)
        return origin, target

    def close(self) -> None:
        """Close every connection, idle or in an exchange (whose call then fails); later calls fail."""
        self._closed = True
        connections = [c for idle in self._idle.values() for c in idle] + list(self._busy)
        self._idle.clear()
        self._busy.clear()
        for connection in connections:
            connection.abort()


def loop_transport_for(endpoint: str, *, timeout: float) -> ConnectionPool | None:
    """A pool for calls to `endpoint`, or None when httplib2 would reach it through a proxy
    (`https_proxy`/`http_proxy` and `no_proxy`, read as httplib2 reads them): this pool
    speaks to the endpoint directly only, so such a deployment keeps httplib2."""
    parts = urlsplit(endpoint)
    proxy = httplib2.proxy_info_from_environment(parts.scheme)
    if proxy is not None and not proxy.bypass_host(parts.hostname or ""):
        return None
    return ConnectionPool(timeout=timeout)


def verified_context() -> ssl.SSLContext:
    """TLS verified against the CA store httplib2 uses (the system's, or HTTPLIB2_CA_CERTS)."""
    context = ssl.create_default_context(cafile=httplib2.CA_CERTS)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _request_bytes(method: str, target: str, host: str, headers: dict, body: bytes | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"host: {host}"]
    has_length = False
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in str(value) or "\n" in str(value):
            raise ValueError(f"header {name!r} holds a line break")
        if name.lower() == "content-length":
            has_length = True
        lines.append(f"{name}: {value}")
    if not has_length and (body or method not in ("GET", "HEAD")):
        lines.append(f"content-length: {len(body or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


def _response(status: int, reason: bytes, raw_headers: list, content: bytes) -> tuple[httplib2.Response, bytes]:
    info: dict[str, str] = {}
    for name, value in raw_headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        info[key] = f"{info[key]}, {text}" if key in info else text
    encoding = info.get("content-encoding")
    if encoding in ("gzip", "deflate") and content:
        content = _decoded(content, encoding)
        del info["content-encoding"]
        info["-content-encoding"] = encoding  # as httplib2 marks a decoded answer
        info["content-length"] = str(len(content))
    info["status"] = str(status)
    response = httplib2.Response(info)
    response.reason = reason.decode("latin-1")
    return response, content


def _decoded(content: bytes, encoding: str) -> bytes:
    # "deflate" is the zlib format (RFC 9110 8.4.1.2), which some servers send as a bare deflate
    # stream instead: both are read, as httplib2 reads them.
    windows = (16 + zlib.MAX_WBITS,) if encoding == "gzip" else (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    for window in windows:
        decoder = zlib.decompressobj(window)
        try:
            decoded = decoder.decompress(content, MAX_BODY_BYTES)
            break
        except zlib.error as exc:
            error = exc
    else:
        raise TransportError(f"undecodable {encoding} answer: {error}")
    if decoder.unconsumed_tail:
        raise TransportError(f"answer larger than {MAX_BODY_BYTES} bytes once decoded")
    if not decoder.eof:  # its framing was whole, the compressed stream in it was not
        raise TransportError(f"{encoding} answer cut short")
    return decoded
