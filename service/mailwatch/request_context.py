"""Who and which request the current RPC is: contextvars read by servicers and logs.

The error interceptor starts every request (a request id: the client's
`x-request-id` when well formed, else a fresh one); the auth interceptor
records the authenticated tenant. Both live in the RPC's own task, so the
values are visible to everything the servicer awaits, and to log records:

    tenant_id = current_tenant_id()   # in a servicer
    handler.addFilter(RequestContextFilter())

Nothing here knows about gRPC, so logging and lower layers can use it.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

from mailwatch.domain.errors import Unauthenticated

#: Metadata key a client may set to correlate its logs with ours.
REQUEST_ID_METADATA_KEY = "x-request-id"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")

_tenant_id: contextvars.ContextVar[uuid.UUID | None] = contextvars.ContextVar("mailwatch_tenant_id", default=None)
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("mailwatch_request_id", default=None)
# A SHA-256 of the API key the call came with (never the key): what per-key limits count by.
_api_key: contextvars.ContextVar[bytes | None] = contextvars.ContextVar("mailwatch_api_key", default=None)
# Whether the failure of the current call was logged where it happened (a limit's refusal,
# logged once per interval with its count): the access log then writes no line of its own.
_failure_logged: contextvars.ContextVar[bool] = contextvars.ContextVar("mailwatch_failure_logged", default=False)


def start_request(client_request_id: str | bytes | None) -> str:
    """Begin a request: its id (the client's if acceptable, else a fresh one), no tenant yet."""
    request_id = client_request_id if isinstance(client_request_id, str) else None
    if request_id is None or not _REQUEST_ID_RE.fullmatch(request_id):
        request_id = uuid.uuid4().hex
    _request_id.set(request_id)
    _tenant_id.set(None)
    _api_key.set(None)
    _failure_logged.set(False)
    return request_id


def set_tenant_id(tenant_id: uuid.UUID, *, api_key_digest: bytes | None = None) -> None:
    _tenant_id.set(tenant_id)
    _api_key.set(api_key_digest)


def current_api_key_digest() -> bytes | None:
    """The SHA-256 of the current call's API key; None outside an API-key-authenticated call."""
    return _api_key.get()


def mark_failure_logged() -> None:
    """The current call's failure is logged (or deliberately counted instead): no access log line for it."""
    _failure_logged.set(True)


def failure_logged() -> bool:
    return _failure_logged.get()


def current_tenant_id() -> uuid.UUID:
    """The authenticated tenant of the current RPC.

    Raises Unauthenticated outside an API-key-authenticated call, so a servicer
    wired up without the auth interceptor fails closed.
    """
    tenant_id = _tenant_id.get()
    if tenant_id is None:
        raise Unauthenticated("no authenticated tenant for this call")
    return tenant_id


def current_request_id() -> str | None:
    """The id of the current RPC (the client's x-request-id, or a fresh one)."""
    return _request_id.get()


class RequestContextFilter(logging.Filter):
    """Adds `tenant_id` and `request_id` to every log record (None outside RPCs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "tenant_id"):
            tenant_id = _tenant_id.get()
            record.tenant_id = str(tenant_id) if tenant_id else None
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        return True
