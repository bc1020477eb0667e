"""Push ingest: an aiohttp endpoint for Pub/Sub push subscriptions.

Pub/Sub POSTs `{"message": {"data", "messageId", "attributes", "publishTime"},
"subscription"}` and treats 102/200/201/202/204 as an acknowledgement;
anything else is retried with backoff until the message expires. So:

- 204 only after the durable write (the same one-transaction write as pull);
- malformed data → stored in `malformed_notifications`, then 204, so Pub/Sub
  does not retry a message that can never succeed;
- database unavailable → 503, so Pub/Sub redelivers later;
- with `PushAuth` configured, the push subscription's OIDC token
  (`Authorization: Bearer <JWT>`) must verify: 401 when missing, unparsable,
  badly signed or expired; 403 when it is a valid Google token for someone
  else (audience, issuer, service-account email, unverified email);
  503 when the signing certificates cannot be fetched.

With `accept_unwrapped`, a subscription with payload unwrapping
(`pushConfig.noWrapper`) is understood too: its body is the message data
itself (Gmail's JSON, not base64) and the message id, with write metadata on,
comes in the `x-goog-pubsub-message-id` header. A body that is a push
envelope is read as one either way.

Signature and expiry are checked by `google.oauth2.id_token.verify_token`
against `certs_url` (Google's `{kid: x509 PEM}` endpoint by default;
configurable so tests serve their own), with the certificates cached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
import logging
import threading
import time
from dataclasses import dataclass

from aiohttp import web
from google.auth import exceptions as google_auth_exceptions
from google.auth import transport

from mailwatch.clock import Clock
from mailwatch.ingest import metrics
from mailwatch.ingest.decode import (
    MAX_DATA_BYTES,
    MalformedNotification,
    MalformedReason,
    decode_push_envelope,
    storable_text,
    truncate,
)
from mailwatch.ingest.record import IngestStats, Received, record_batch
from mailwatch.store.db import Sessions

log = logging.getLogger(__name__)

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
PUSH_SOURCE = "push"
DEFAULT_PATH = "/pubsub/push"
# A push body is the base64 data (4/3 of MAX_DATA_BYTES) plus a small envelope.
MAX_BODY_BYTES = 2 * MAX_DATA_BYTES + 16 * 1024

STATS_KEY = web.AppKey("mailwatch_ingest_push_stats", IngestStats)


@dataclass(frozen=True)
class PushAuth:
    """What a push request's OIDC token must say.

    `audience` is the push subscription's configured audience (by default its
    endpoint URL); `service_account_email` the service account the
    subscription signs tokens as.
    """

    audience: str
    service_account_email: str
    certs_url: str = GOOGLE_CERTS_URL
    issuers: tuple[str, ...] = GOOGLE_ISSUERS
    clock_skew_seconds: int = 10
    certs_cache_seconds: float = 300.0
    # After a failure with cached certificates, refetch at most this often
    # (a key rotation is picked up quickly; garbage tokens cannot force a fetch each).
    certs_refetch_min_seconds: float = 30.0
    http_timeout: float = 10.0
    # Tenants' own push subscriptions (their Google settings): audience -> the
    # Google projects whose service accounts may sign for it. Read on each
    # request (a holder refreshed in the background), so settings apply soon.
    tenant_audiences: Callable[[], Mapping[str, frozenset[str]]] | None = None


class PushAuthError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _CachingRequest(transport.Request):
    """A google-auth transport that caches successful GETs of one URL (the certs)."""

    def __init__(self, url: str, ttl: float, timeout: float) -> None:
        import requests
        from google.auth.transport.requests import Request

        self._session = requests.Session()
        self._inner = Request(session=self._session)
        self._url = url
        self._ttl = ttl
        self._timeout = timeout
        self._lock = threading.Lock()
        self._cached = None
        self._fetched_at = float("-inf")

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        cacheable = url == self._url and method == "GET"
        with self._lock:
            if cacheable and self._cached is not None and time.monotonic() - self._fetched_at < self._ttl:
                return self._cached
        response = self._inner(url, method=method, body=body, headers=headers,
                               timeout=timeout or self._timeout, **kwargs)
        if cacheable and response.status == 200:
            with self._lock:
                self._cached, self._fetched_at = _Frozen(response), time.monotonic()
        return response

    def age(self) -> float:
        return time.monotonic() - self._fetched_at

    def invalidate(self) -> None:
        with self._lock:
            self._cached, self._fetched_at = None, float("-inf")

    def close(self) -> None:
        self._session.close()


class _Frozen(transport.Response):
    def __init__(self, response: transport.Response) -> None:
        self._status, self._headers, self._data = response.status, dict(response.headers), response.data

    @property
    def status(self):
        return self._status

    @property
    def headers(self):
        return self._headers

    @property
    def data(self):
        return self._data


class OidcVerifier:
    """Verifies Pub/Sub push OIDC tokens (blocking: call `verify` from a thread)."""

    def __init__(self, auth: PushAuth) -> None:
        self.auth = auth
        self._request = _CachingRequest(auth.certs_url, auth.certs_cache_seconds, auth.http_timeout)

    def verify(self, token: str) -> dict:
        """Return the claims, or raise PushAuthError(401|403|503, reason)."""
        try:
            claims = self._verify_signature(token)
        except PushAuthError as exc:
            # A token that fails against certificates fetched a while ago may
            # be signed with a key Google rotated in since: refetch once.
            if exc.status != 401 or self._request.age() < self.auth.certs_refetch_min_seconds:
                raise
            self._request.invalidate()
            claims = self._verify_signature(token)
        return self._check_claims(claims)

    def _verify_signature(self, token: str) -> dict:
        from google.oauth2 import id_token

        try:
            # audience=None: the audience is checked below with the other
            # claims, so a wrong one answers 403 rather than 401.
            return dict(id_token.verify_token(
                token, self._request, audience=None, certs_url=self.auth.certs_url,
                clock_skew_in_seconds=self.auth.clock_skew_seconds,
            ))
        except google_auth_exceptions.TransportError:
            raise PushAuthError(503, "certs_unavailable") from None
        except (ValueError, google_auth_exceptions.GoogleAuthError):
            raise PushAuthError(401, "invalid_token") from None

    def _check_claims(self, claims: dict) -> dict:
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        tenant_projects = self._tenant_projects(audiences)
        if self.auth.audience not in audiences and not tenant_projects:
            raise PushAuthError(403, "wrong_audience")
        if claims.get("iss") not in self.auth.issuers:
            raise PushAuthError(403, "wrong_issuer")
        email = str(claims.get("email", ""))
        # A tenant's push subscription signs as a service account of the tenant's project.
        tenant_signer = any(email.endswith(f"@{project}.iam.gserviceaccount.com") for project in tenant_projects)
        if not tenant_signer and (self.auth.audience not in audiences or email != self.auth.service_account_email):
            raise PushAuthError(403, "wrong_email")
        if claims.get("email_verified") is not True:
            raise PushAuthError(403, "email_not_verified")
        return claims

    def _tenant_projects(self, audiences: list) -> set[str]:
        if self.auth.tenant_audiences is None:
            return set()
        accepted = self.auth.tenant_audiences()
        return {project for audience in audiences if isinstance(audience, str)
                for project in accepted.get(audience, ())}

    def close(self) -> None:
        self._request.close()


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def create_push_app(
    sessionmaker: Sessions,
    *,
    auth: PushAuth | None = None,
    path: str = DEFAULT_PATH,
    stats: IngestStats | None = None,
    write_timeout: float | None = None,
    clock: Clock | None = None,
    on_marked_due: Callable[[], None] | None = None,
    accept_unwrapped: bool = False,
) -> web.Application:
    """The push endpoint as an aiohttp application (POST `path`).

    Without `auth`, requests are not authenticated (only for a private network
    or tests). `accept_unwrapped`: also take bodies without the push envelope
    (payload unwrapping). `app[STATS_KEY]` holds per-app counts.
    """
    verifier = OidcVerifier(auth) if auth is not None else None
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATS_KEY] = stats if stats is not None else IngestStats()

    async def handle(request: web.Request) -> web.Response:
        stats = request.app[STATS_KEY]
        if verifier is not None:
            token = _bearer(request.headers.get("Authorization"))
            if token is None:
                metrics.PUSH_REJECTED.labels("missing_token").inc()
                return _reject(401, "missing_token")
            try:
                await asyncio.to_thread(verifier.verify, token)
            except PushAuthError as exc:
                metrics.PUSH_REJECTED.labels(exc.reason).inc()
                log.warning("push request rejected", extra={"reason": exc.reason})
                return _reject(exc.status, exc.reason)

        try:
            received = await _read_message(request, accept_unwrapped)
        except ConnectionResetError:
            # The sender went away mid-body (Pub/Sub gave up, or a push client shut down): no
            # answer can reach it and nothing was acknowledged, so Pub/Sub delivers again.
            metrics.PUSH_REJECTED.labels("connection_lost").inc()
            log.info("push sender disconnected before its body arrived")
            return web.Response(status=400, text="connection lost")
        stats.received += 1
        try:
            await record_batch(sessionmaker, [received], source=PUSH_SOURCE, source_label="push",
                               stats=stats, timeout=write_timeout, clock=clock, on_marked_due=on_marked_due)
        except Exception as exc:  # noqa: BLE001 - any write failure: let Pub/Sub redeliver
            stats.write_failures += 1
            stats.nacked += 1
            metrics.WRITE_FAILURES.labels("push").inc()
            log.warning("push write failed; answering 503", extra={"error": repr(exc)})
            return web.Response(status=503, text="storage unavailable")
        stats.acked += 1
        return web.Response(status=204)

    async def close_verifier(_app: web.Application) -> None:
        if verifier is not None:
            verifier.close()

    app.router.add_post(path, handle)
    app.on_cleanup.append(close_verifier)
    return app


UNWRAPPED_MESSAGE_ID_HEADER = "x-goog-pubsub-message-id"  # Pub/Sub's, with write metadata on


async def _read_message(request: web.Request, accept_unwrapped: bool = False) -> Received:
    """The request as one Received message; malformed ones carry their reason."""
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return Received(message_id=None, data=None, error=MalformedReason.TOO_LARGE)
    try:
        message = decode_push_envelope(body)
    except MalformedNotification as exc:
        if accept_unwrapped and exc.reason is MalformedReason.BAD_ENVELOPE:
            # Payload unwrapping: the body is the data; a bad one is found (and kept) when decoded.
            message_id = request.headers.get(UNWRAPPED_MESSAGE_ID_HEADER)
            return Received(message_id=storable_text(message_id) if message_id else None, data=body)
        return Received(message_id=None, data=None, error=exc.reason, raw_data=truncate(body))
    return Received(
        message_id=message.message_id,
        data=message.data,
        attributes=message.attributes,
        error=message.data_error,
        raw_data=message.raw_data,
    )


def _reject(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status,
                             headers={"WWW-Authenticate": 'Bearer realm="pubsub-push"'} if status == 401 else None)
