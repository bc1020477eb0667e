"""The push endpoint: real aiohttp server, real Postgres, OIDC tokens signed by a local key.

A throwaway RSA key plays Google: its self-signed certificate is served in
Google's `{kid: x509 PEM}` format from a local endpoint, and tokens are signed
with `google.auth.crypt.RSASigner` + `google.auth.jwt.encode`.
"""

from __future__ import annotations

import asyncio
import base64
import io
import datetime as dt
import json
import logging
import time

import pytest
from tests.integration.ingest._ingest_support import notification
from aiohttp import web
from prometheus_client import REGISTRY
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from mailwatch_devstack.ports import free_port
from tests.fixtures.waiting import eventually
from mailwatch.config import HttpSettings
from mailwatch.http import start_http
from mailwatch.ingest import STATS_KEY, PushAuth, create_push_app
from mailwatch.store import create_engine, session_factory
from mailwatch.store.models import MALFORMED_DATA_MAX_BYTES

pytestmark = pytest.mark.integration

AUDIENCE = "https://mailwatch.example.com/pubsub/push"
PUSHER = "pubsub-push@mailwatch-test.iam.gserviceaccount.com"
KID = "test-key-1"


def _key_and_cert():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-google")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def google_key():
    return _key_and_cert()


@pytest.fixture(scope="module")
def impostor_key():
    return _key_and_cert()


class CertsServer:
    hits = 0
    url = ""


@pytest.fixture
async def certs_server(google_key):
    """A local stand-in for https://www.googleapis.com/oauth2/v1/certs."""
    state = CertsServer()

    async def certs(request):
        state.hits += 1
        return web.json_response({KID: google_key[1]})

    app = web.Application()
    app.router.add_get("/oauth2/v1/certs", certs)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    state.url = str(server.make_url("/oauth2/v1/certs"))
    try:
        yield state
    finally:
        await server.close()


@pytest.fixture
def certs_url(certs_server):
    return certs_server.url


def token(key_pem: bytes, *, kid: str = KID, **overrides) -> str:
    now = int(time.time())
    claims = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "azp": "1234567890",
        "sub": "1234567890",
        "email": PUSHER,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
        **overrides,
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    signer = crypt.RSASigner.from_string(key_pem, key_id=kid)
    return jwt.encode(signer, claims).decode()


def push_body(data: bytes | str, message_id: str = "msg-1") -> dict:
    encoded = data if isinstance(data, str) else base64.b64encode(data).decode()
    return {
        "message": {"data": encoded, "messageId": message_id, "attributes": {"origin": "test"},
                    "publishTime": "2024-05-01T00:00:00.000Z"},
        "subscription": "projects/mailwatch-test/subscriptions/push",
    }


def gmail(email: str, history_id: int) -> bytes:
    return json.dumps(notification(email, history_id)).encode()


@pytest.fixture
async def push_client(sessions, certs_url):
    app = create_push_app(sessions, auth=PushAuth(audience=AUDIENCE, service_account_email=PUSHER,
                                                  certs_url=certs_url))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        yield client


def bearer(value: str) -> dict:
    return {"Authorization": f"Bearer {value}"}


async def test_valid_token_is_accepted_after_the_durable_write(db, push_client, google_key):
    tenant = await db.tenant()
    mailbox = await db.mailbox(tenant, "a@example.com", history_id=100)

    response = await push_client.post("/pubsub/push", json=push_body(gmail("a@example.com", 150)),
                                      headers=bearer(token(google_key[0])))
    assert response.status == 204
    # The 2xx came after the commit: the row is already there to read.
    row = await db.row(mailbox)
    assert (row.notified_history_id, row.sync_due_at is not None) == (150, True)
    stats = push_client.server.app[STATS_KEY]
    assert (stats.accepted, stats.acked) == (1, 1)

    # The other accepted issuer spelling, and a replay (Pub/Sub retries) is harmless.
    response = await push_client.post("/pubsub/push", json=push_body(gmail("a@example.com", 150)),
                                      headers=bearer(token(google_key[0], iss="accounts.google.com")))
    assert response.status == 204
    assert (await db.row(mailbox)).notified_history_id == 150


@pytest.mark.parametrize(
    "make_headers, status, reason",
    [
        (lambda key, other: {}, 401, "missing_token"),
        (lambda key, other: {"Authorization": "Basic dXNlcjpwYXNz"}, 401, "missing_token"),
        (lambda key, other: bearer(""), 401, "missing_token"),
        (lambda key, other: bearer("not.a.jwt"), 401, "invalid_token"),
        (lambda key, other: bearer("garbage"), 401, "invalid_token"),
        (lambda key, other: bearer(token(other)), 401, "invalid_token"),  # bad signature
        (lambda key, other: bearer(token(key, kid="unknown-kid")), 401, "invalid_token"),
        (lambda key, other: bearer(token(key, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
         401, "invalid_token"),  # expired
        (lambda key, other: bearer(token(key, exp=None)), 401, "invalid_token"),
        (lambda key, other: bearer(token(key, aud="https://someone-else.example.com/push")), 403, "wrong_audience"),
        (lambda key, other: bearer(token(key, iss="https://evil.example.com")), 403, "wrong_issuer"),
        (lambda key, other: bearer(token(key, email="intruder@evil.iam.gserviceaccount.com")), 403, "wrong_email"),
        (lambda key, other: bearer(token(key, email=None)), 403, "wrong_email"),
        (lambda key, other: bearer(token(key, email_verified=False)), 403, "email_not_verified"),
        (lambda key, other: bearer(token(key, email_verified="true")), 403, "email_not_verified"),
    ],
)
async def test_bad_tokens_are_rejected_and_nothing_is_written(
    db, push_client, google_key, impostor_key, make_headers, status, reason
):
    tenant = await db.tenant()
    mailbox = await db.mailbox(tenant, "a@example.com", history_id=100)
    response = await push_client.post("/pubsub/push", json=push_body(gmail("a@example.com", 150)),
                                      headers=make_headers(google_key[0], impostor_key[0]))
    assert response.status == status
    assert (await response.json()) == {"error": reason}
    assert (await db.row(mailbox)).notified_history_id is None
    assert await db.malformed() == []


@pytest.mark.parametrize(
    "body, reason",
    [
        (push_body("%%% not base64 %%%"), "not_base64"),
        (push_body(b"not json"), "not_json"),
        (push_body(b'{"emailAddress": "a@example.com", "historyId": 1.5}'), "bad_history_id"),
        (push_body(b'{"emailAddress": "a@example.com"}'), "missing_history_id"),
        ({"no": "message"}, "bad_envelope"),
        ("this is not JSON", "bad_envelope"),
    ],
)
async def test_malformed_push_is_stored_then_acknowledged(db, push_client, google_key, body, reason):
    kwargs = {"json": body} if isinstance(body, dict) else {"data": body}
    response = await push_client.post("/pubsub/push", headers=bearer(token(google_key[0])), **kwargs)
    assert response.status == 204
    rows = await db.malformed()
    assert [(r.reason, r.source) for r in rows] == [(reason, "push")]
    if isinstance(body, dict) and "message" in body:
        assert rows[0].pubsub_message_id == "msg-1"
        assert rows[0].attributes == {"origin": "test"}


async def test_oversized_push_is_stored_truncated_then_acknowledged(db, push_client, google_key):
    body = push_body(b'{"emailAddress": "a@example.com", "historyId": "1", "pad": "' + b"x" * 100_000 + b'"}')
    response = await push_client.post("/pubsub/push", json=body, headers=bearer(token(google_key[0])))
    assert response.status == 204
    rows = await db.malformed()
    assert [r.reason for r in rows] == ["too_large"]
    assert len(rows[0].data) <= MALFORMED_DATA_MAX_BYTES

    huge = json.dumps(push_body("A" * 2_000_000)).encode()  # beyond the request size limit altogether
    response = await push_client.post("/pubsub/push", data=io.BytesIO(huge), headers={
        **bearer(token(google_key[0])), "Content-Type": "application/json"})
    assert response.status == 204
    assert sorted(r.reason for r in await db.malformed()) == ["too_large", "too_large"]


async def test_database_down_answers_5xx_so_pubsub_retries(certs_url, google_key):
    dead = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere")
    app = create_push_app(session_factory(dead), auth=PushAuth(audience=AUDIENCE, service_account_email=PUSHER,
                                                               certs_url=certs_url))
    try:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            for body in (push_body(gmail("a@example.com", 5)), push_body(b"garbage")):
                response = await client.post("/pubsub/push", json=body, headers=bearer(token(google_key[0])))
                assert response.status == 503
            assert app[STATS_KEY].write_failures == 2
            assert app[STATS_KEY].acked == 0
    finally:
        await dead.dispose()


async def test_certs_unavailable_answers_503(sessions, google_key):
    unreachable = f"http://127.0.0.1:{free_port()}/certs"
    app = create_push_app(sessions, auth=PushAuth(audience=AUDIENCE, service_account_email=PUSHER,
                                                  certs_url=unreachable, http_timeout=2))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        response = await client.post("/pubsub/push", json=push_body(gmail("a@example.com", 5)),
                                     headers=bearer(token(google_key[0])))
        assert response.status == 503


async def test_certificates_are_cached(sessions, google_key, certs_server):
    app = create_push_app(sessions, auth=PushAuth(audience=AUDIENCE, service_account_email=PUSHER,
                                                  certs_url=certs_server.url))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        for n in range(3):
            response = await client.post("/pubsub/push", json=push_body(gmail("x@example.com", n + 1)),
                                         headers=bearer(token(google_key[0])))
            assert response.status == 204
    assert certs_server.hits == 1


async def test_without_auth_configured_no_token_is_needed(db, sessions):
    tenant = await db.tenant()
    mailbox = await db.mailbox(tenant, "a@example.com", history_id=100)
    app = create_push_app(sessions, path="/push")
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        response = await client.post("/push", json=push_body(gmail("A@example.com", 101)))
        assert response.status == 204
    assert (await db.row(mailbox)).notified_history_id == 101


def unwrapped_headers(key_pem: bytes, message_id: str) -> dict:
    """What Pub/Sub sends with payload unwrapping and write metadata on (the data is the body)."""
    return {**bearer(token(key_pem)), "Content-Type": "application/json", "x-goog-pubsub-message-id": message_id,
            "x-goog-pubsub-subscription-name": "projects/mailwatch-test/subscriptions/push",
            "x-goog-pubsub-publish-time": "2024-05-01T00:00:00.000Z"}


async def test_unwrapped_payloads_are_accepted_when_configured(db, sessions, certs_url, google_key):
    tenant = await db.tenant()
    mailbox = await db.mailbox(tenant, "a@example.com", history_id=100)
    app = create_push_app(sessions, auth=PushAuth(audience=AUDIENCE, service_account_email=PUSHER,
                                                  certs_url=certs_url), accept_unwrapped=True)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        response = await client.post("/pubsub/push", data=gmail("a@example.com", 120),
                                     headers=unwrapped_headers(google_key[0], "m-9"))
        assert response.status == 204
        assert (await db.row(mailbox)).notified_history_id == 120
        # Enveloped deliveries (another subscription on the same endpoint) still are.
        response = await client.post("/pubsub/push", json=push_body(gmail("a@example.com", 130)),
                                     headers=bearer(token(google_key[0])))
        assert response.status == 204
        assert (await db.row(mailbox)).notified_history_id == 130
        # An unwrapped body that is no Gmail notification is kept, with its message id, and acknowledged.
        response = await client.post("/pubsub/push", data=b"not json", headers=unwrapped_headers(google_key[0], "m-10"))
        assert response.status == 204
    assert [(r.reason, r.pubsub_message_id, r.data) for r in await db.malformed()] == [("not_json", "m-10", b"not json")]


async def test_unwrapped_payloads_are_malformed_unless_configured(db, push_client, google_key):
    tenant = await db.tenant()
    mailbox = await db.mailbox(tenant, "a@example.com", history_id=100)
    response = await push_client.post("/pubsub/push", data=gmail("a@example.com", 120),
                                      headers=unwrapped_headers(google_key[0], "m-9"))
    assert response.status == 204
    assert (await db.row(mailbox)).notified_history_id is None
    assert [r.reason for r in await db.malformed()] == ["bad_envelope"]


async def test_a_sender_gone_mid_body_is_no_error_and_nothing_is_written(db, sessions, caplog):
    """A push client that disconnects before its body arrives (Pub/Sub giving up, a shutting-down
    pusher) is routine: no ERROR with a traceback, nothing stored, and Pub/Sub delivers again."""
    tenant = await db.tenant()
    mailbox = await db.mailbox(tenant, "a@example.com", history_id=100)
    app = create_push_app(sessions, path="/push")
    lost_before = _lost()
    runner, port = await start_http(app, HttpSettings(listen="127.0.0.1:0"))  # the service's own runner
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps(push_body(gmail("a@example.com", 101))).encode()
        writer.write(b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
        await writer.drain()
        # Closed at once: aiohttp hands the handler the partial body before the lost connection.
        writer.close()
        await writer.wait_closed()
        await eventually(lambda: _lost() > lost_before, what="the lost connection counted")
    finally:
        await runner.cleanup()
    assert app[STATS_KEY].received == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert (await db.row(mailbox)).notified_history_id is None
    assert await db.malformed() == []


def _lost() -> float:
    return REGISTRY.get_sample_value("mailwatch_ingest_push_rejected_total", {"reason": "connection_lost"}) or 0.0
