"""The event loop's HTTP/1.1 pool (gmail/transport.py) against local peers on real sockets:
keep-alive, a kept-alive connection that died retried once for idempotent requests only,
TLS verified, answers decoded and bounded."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import zlib

import pytest

from mailwatch.gmail import transport
from mailwatch.gmail.transport import ConnectionPool, TransportError
from tests.fixtures.certificates import CertificateAuthority
from tests.integration.gmail.peers import RawPeer, json_answer, read_request, reset

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool():
    pool = ConnectionPool(timeout=30)
    yield pool
    pool.close()


async def answer_first_request_only(reader, writer, number):
    """Answers each connection's first request and keeps it open; a second request on it
    finds it closed (as when the server times an idle connection out just as it is reused)."""
    await read_request(reader)
    writer.write(json_answer({"connection": number}))
    await writer.drain()
    await read_request(reader)
    writer.close()


async def test_connections_are_kept_alive_and_reused(pool):
    async def echo(reader, writer, number):
        while True:
            line, headers, body = await read_request(reader)
            writer.write(json_answer({"connection": number, "line": line, "body": body.decode()}))

    async with RawPeer(echo) as peer:
        first, _ = await pool.request("GET", peer.url() + "a?x=1", {"accept": "application/json"}, None)
        response, content = await pool.request("POST", peer.url() + "b", {}, '{"k": 1}')
        assert first.status == 200 and response.status == 200
        assert b'"line": "POST /b HTTP/1.1"' in content and b'"body": "{\\"k\\": 1}"' in content
        assert peer.connections == 1


async def test_a_reused_connection_found_closed_is_retried_once_for_a_get(pool):
    async with RawPeer(answer_first_request_only) as peer:
        await pool.request("GET", peer.url(), {}, None)
        response, content = await pool.request("GET", peer.url(), {}, None)
        assert response.status == 200 and content == b'{"connection": 1}'
        assert peer.connections == 2


async def test_a_post_on_a_reused_connection_found_closed_is_not_sent_again(pool):
    """The POST may have been received before the connection died: the caller decides."""
    async with RawPeer(answer_first_request_only) as peer:
        await pool.request("GET", peer.url(), {}, None)
        with pytest.raises(TransportError):
            await pool.request("POST", peer.url(), {}, "{}")
        assert peer.connections == 1


async def test_a_gzip_answer_is_decoded(pool):
    async def gzipped(reader, writer, number):
        await read_request(reader)
        writer.write(json_answer({"historyId": "7"}, compress=True))

    async with RawPeer(gzipped) as peer:
        response, content = await pool.request("GET", peer.url(), {"accept-encoding": "gzip"}, None)
        assert content == b'{"historyId": "7"}' and response.get("content-encoding") is None


async def test_an_answer_past_the_size_bound_is_refused(pool, monkeypatch):
    monkeypatch.setattr(transport, "MAX_BODY_BYTES", 1000)

    async def large(reader, writer, number):
        await read_request(reader)
        writer.write(json_answer({"pad": "x" * 5000}))
        await asyncio.Event().wait()

    async def gzip_bomb(reader, writer, number):
        await read_request(reader)
        writer.write(json_answer({"pad": "x" * 5000}, compress=True))
        await asyncio.Event().wait()

    async with RawPeer(large) as peer, RawPeer(gzip_bomb) as bomb:
        with pytest.raises(TransportError, match="larger than 1000 bytes"):
            await pool.request("GET", peer.url(), {}, None)
        with pytest.raises(TransportError, match="larger than 1000 bytes once decoded"):
            await pool.request("GET", bomb.url(), {}, None)


async def test_an_answer_without_a_length_ends_with_the_connection(pool):
    async def until_close(reader, writer, number):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"a\": 1}")
        await writer.drain()
        writer.close()

    async with RawPeer(until_close) as peer:
        response, content = await pool.request("GET", peer.url(), {}, None)
        assert (response.status, content) == (200, b'{"a": 1}')


async def test_tls_is_verified(tmp_path):
    authority = CertificateAuthority("gmail test CA")
    cert_file, key_file = authority.issue("localhost", server=True).write(tmp_path, "server")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)

    async def answer(reader, writer, number):
        await read_request(reader)
        writer.write(json_answer({"secure": True}))
        await writer.drain()

    trusting = ssl.create_default_context(cafile=str(authority.write(tmp_path, "ca")))
    async with RawPeer(answer, ssl_context=server_context) as peer:
        pool = ConnectionPool(timeout=30, ssl_context=trusting)
        try:
            response, content = await pool.request("GET", peer.url("https", "localhost"), {}, None)
            assert content == b'{"secure": true}'
        finally:
            pool.close()
        # The default verification (httplib2's CA store) does not know the test CA.
        default = ConnectionPool(timeout=30)
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                await default.request("GET", peer.url("https", "localhost"), {}, None)
        finally:
            default.close()


async def test_interim_answers_before_the_final_one_are_skipped(pool):
    """RFC 9110 15.2: a client parses 1xx answers before the final one even unasked (http.client,
    under httplib2, skips a 100 Continue); the call gets the final answer, the connection stays usable."""
    async def interim_first(reader, writer, number):
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
                         + json_answer({"connection": number}))
            await writer.drain()

    async with RawPeer(interim_first) as peer:
        for _ in range(2):
            response, content = await pool.request("GET", peer.url(), {}, None)
            assert (response.status, response.reason, content) == (200, "OK", b'{"connection": 0}')
            assert "link" not in response
        assert peer.connections == 1


async def test_an_answer_without_a_length_cut_by_a_reset_is_a_failure(pool):
    """An answer that ends with the connection is whole only when the connection ends in order:
    a reset cuts it short (http.client raises, as here)."""
    async def cut(reader, writer, number):
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"historyId": ')
        await writer.drain()
        reset(writer)

    async with RawPeer(cut) as peer:
        with pytest.raises(TransportError, match="connection closed during the exchange"):
            await pool.request("GET", peer.url(), {}, None)


async def test_a_deflate_answer_in_the_zlib_format_is_decoded(pool):
    """RFC 9110 8.4.1.2: "deflate" is the zlib format; httplib2 reads it, and the raw deflate
    stream some servers send instead."""
    document = b'{"historyId": "7"}'
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    bodies = [zlib.compress(document), raw.compress(document) + raw.flush()]

    async def deflated(reader, writer, number):
        for body in bodies:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: deflate\r\ncontent-length: %d\r\n\r\n"
                         % len(body) + body)
            await writer.drain()

    async with RawPeer(deflated) as peer:
        for _ in bodies:
            response, content = await pool.request("GET", peer.url(), {"accept-encoding": "gzip, deflate"}, None)
            assert content == document and response["-content-encoding"] == "deflate"


async def test_a_head_that_never_ends_is_refused_at_the_header_bound(monkeypatch):
    """httptools hands a header over only once it ends: a header (or status line) that goes on
    and on is refused at the bound as it arrives, not held in memory until the call times out."""
    monkeypatch.setattr(transport, "MAX_HEADER_BYTES", 1000)

    async def endless_header(reader, writer, number):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nx-pad: " + b"a" * 20_000)
        await writer.drain()
        await read_request(reader)  # until the pool closes the connection

    async def endless_status_line(reader, writer, number):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 " + b"O" * 20_000)
        await writer.drain()
        await read_request(reader)

    pool = ConnectionPool(timeout=10)
    try:
        async with RawPeer(endless_header) as header, RawPeer(endless_status_line) as status:
            for peer in (header, status):
                with pytest.raises(TransportError, match="headers too large"):
                    await pool.request("GET", peer.url(), {}, None)
    finally:
        pool.close()


async def test_closing_the_pool_fails_the_calls_in_flight_and_opens_nothing_after():
    """close() (at shutdown) fails the exchanges in flight: a GET on a kept-alive connection is
    not sent again on a new one, an answer that ends with its connection is not taken as
    whole, and no connection is opened once the pool is closed."""
    asked = asyncio.Queue()

    def answer_once_then(second_answer: bytes):
        async def handler(reader, writer, number):
            await read_request(reader)
            writer.write(json_answer({"connection": number}))
            await writer.drain()
            await read_request(reader)
            writer.write(second_answer)
            await writer.drain()
            await asked.put(number)
            await read_request(reader)  # until the pool closes the connection
        return handler

    cut_short = answer_once_then(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"historyId": ')
    async with RawPeer(cut_short) as cut, RawPeer(answer_once_then(b"")) as silent:
        for peer in (cut, silent):
            pool = ConnectionPool(timeout=30)
            try:
                await pool.request("GET", peer.url(), {}, None)  # a connection kept alive
                call = asyncio.create_task(pool.request("GET", peer.url(), {}, None))
                await asked.get()
                pool.close()
                with pytest.raises(TransportError):
                    await call
                with pytest.raises(TransportError, match="closed"):
                    await pool.request("GET", peer.url(), {}, None)
            finally:
                pool.close()
        assert (cut.connections, silent.connections) == (1, 1)


async def test_a_compressed_answer_cut_short_is_a_failure(pool):
    """A gzip stream that ends early inside a whole answer (its Content-Length matches what came)
    decodes to part of a document: the call fails as unavailable instead of reading half of it."""
    async def cut_gzip(reader, writer, number):
        await read_request(reader)
        body = gzip.compress(json.dumps({"historyId": "7", "pad": "x" * 200}).encode())[:-12]
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()

    async with RawPeer(cut_gzip) as peer:
        with pytest.raises(TransportError, match="gzip answer cut short"):
            await pool.request("GET", peer.url(), {"accept-encoding": "gzip"}, None)


async def test_a_connection_idle_past_the_limit_is_not_reused(monkeypatch):
    """A middlebox forgets an idle TCP connection without a word (Compute Engine's firewall after
    10 minutes, Cloud NAT after 20): a request sent on it gets no answer and waits out the
    call's timeout. Here the peer drops what comes on a connection idle past 0.2 s; with the
    limit at 0.1 s the next call goes on a new connection and is answered."""
    monkeypatch.setattr(transport, "MAX_IDLE_SECONDS", 0.1)

    async def forgets_idle_connections(reader, writer, number):
        loop = asyncio.get_running_loop()
        answered_at = None
        while True:
            await read_request(reader)
            if answered_at is not None and loop.time() - answered_at > 0.2:
                await asyncio.Event().wait()  # the answer is lost on the way
            writer.write(json_answer({"connection": number}))
            await writer.drain()
            answered_at = loop.time()

    pool = ConnectionPool(timeout=5)
    try:
        async with RawPeer(forgets_idle_connections) as peer:
            await pool.request("GET", peer.url(), {}, None)
            await asyncio.sleep(0.3)  # the connection idles past the limit and the peer's 0.2 s
            response, content = await pool.request("GET", peer.url(), {}, None)
            assert content == b'{"connection": 1}' and peer.connections == 2
    finally:
        pool.close()
