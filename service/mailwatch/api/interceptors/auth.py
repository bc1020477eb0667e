"""Authentication of every RPC, as one `grpc.aio` server interceptor.

- `mailwatch.v1.MailboxService` (and any service not listed below): a tenant
  API key, `authorization: Bearer <key>`, checked with
  `mailwatch.store.api_keys.authenticate`.
- `mailwatch.v1.AdminService`: the operator token (`Settings.operator_token`),
  compared in constant time. An empty operator token disables the service:
  PERMISSION_DENIED, reason ADMIN_DISABLED.
- gRPC health checking and server reflection: no credential.

The check runs inside the RPC's own task (the interceptor wraps the method
handler rather than deciding in `intercept_service`), so it honours
cancellation and deadlines and works the same for unary and streaming
methods. A refusal is raised; the error interceptor, outside this one
(`mailwatch.api.interceptors`), turns it into the call's status. On success
the tenant id is in a contextvar for the rest of the call
(`mailwatch.request_context.current_tenant_id()`):

    async def GetMailbox(self, request, context):
        tenant_id = current_tenant_id()

Successful API-key lookups are cached in memory for `cache_ttl` seconds
(default 5), keyed by a SHA-256 of the key, bounded to `cache_size` entries:
a busy client does not cost a Postgres round trip per call, and a revoked key
keeps working on a replica for at most `cache_ttl` seconds. Failed lookups are
never cached, so a new key works at once.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import time
import uuid
from typing import Any, Awaitable, Callable

import grpc

from mailwatch.api.handlers import Behavior, WrappingInterceptor, around, rebuild
from mailwatch.domain.errors import AdminDisabled, Unauthenticated
from mailwatch.request_context import set_tenant_id
from mailwatch.store.db import Sessions
from mailwatch.v1 import admin_service_pb2

log = logging.getLogger(__name__)

ADMIN_SERVICE = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

AuthenticateApiKey = Callable[[Sessions, str], Awaitable[uuid.UUID]]


class ApiKeyCache:
    """A small TTL + LRU map from key digest to tenant id."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: collections.OrderedDict[bytes, tuple[uuid.UUID, float]] = collections.OrderedDict()

    def get(self, digest: bytes) -> uuid.UUID | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        tenant_id, expires_at = entry
        if self._clock() >= expires_at:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return tenant_id

    def put(self, digest: bytes, tenant_id: uuid.UUID) -> None:
        if self._ttl <= 0 or self._max_entries <= 0:
            return
        self._entries[digest] = (tenant_id, self._clock() + self._ttl)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class AuthInterceptor(WrappingInterceptor):
    """See the module docstring.

    `sessions`: the database API keys are looked up in;
    `authenticate_api_key` defaults to `mailwatch.store.api_keys.authenticate`
    (injectable for tests).
    """

    def __init__(
        self,
        sessions: Sessions | None,
        *,
        operator_token: str = "",
        cache_ttl: float = 5.0,
        cache_size: int = 10_000,
        authenticate_api_key: AuthenticateApiKey | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        # Compared as digests so neither the content nor the length leaks through timing.
        self._operator_digest = hashlib.sha256(operator_token.encode()).digest() if operator_token else b""
        self._authenticate_api_key = authenticate_api_key
        self.cache = ApiKeyCache(cache_ttl, cache_size, clock)

    def wrap_handler(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        service = _service_name(method)
        if service in PUBLIC_SERVICES:
            return handler
        check = self._check_operator if service == ADMIN_SERVICE else self._check_api_key
        return _guarded(handler, check)

    async def _check_api_key(self, context: grpc.aio.ServicerContext) -> None:
        key = _bearer_token(context)
        digest = hashlib.sha256(key.encode()).digest()
        tenant_id = self.cache.get(digest)
        if tenant_id is None:
            tenant_id = await self._lookup(key)
            self.cache.put(digest, tenant_id)
        set_tenant_id(tenant_id, api_key_digest=digest)

    async def _lookup(self, key: str) -> uuid.UUID:
        authenticate = self._authenticate_api_key
        if authenticate is None:
            from mailwatch.store.api_keys import authenticate
        if self._sessions is None:
            raise RuntimeError("AuthInterceptor has no database to look API keys up in")
        return await authenticate(self._sessions, key)

    async def _check_operator(self, context: grpc.aio.ServicerContext) -> None:
        if not self._operator_digest:
            raise AdminDisabled("the admin API is disabled: the server has no operator token (MAILWATCH_OPERATOR_TOKEN)")
        token = _bearer_token(context)
        if not hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self._operator_digest):
            raise Unauthenticated("invalid operator token")


def _service_name(method: str) -> str:
    # "/package.Service/Method" -> "package.Service"
    return method.lstrip("/").partition("/")[0]


def _bearer_token(context: grpc.aio.ServicerContext) -> str:
    values = [value for key, value in (context.invocation_metadata() or ()) if key == "authorization"]
    if not values:
        raise Unauthenticated("missing credentials: send metadata 'authorization: Bearer <key>'")
    if len(values) > 1:
        raise Unauthenticated("more than one authorization header")
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("malformed authorization header: expected 'Bearer <key>'")
    return token


Check = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


def _guarded(handler: grpc.RpcMethodHandler, check: Check) -> grpc.RpcMethodHandler:
    """The same handler, with `check` run (inside the RPC) before its behaviour."""

    async def authorize(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(context)
        return request

    def wrap(behavior: Behavior) -> Behavior:
        return around(behavior, prepare=authorize)

    return rebuild(handler, wrap)
