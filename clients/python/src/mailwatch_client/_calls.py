"""Every RPC the clients make, declared once: the table both client twins are built from.

An entry (`Call`) says which service the RPC belongs to (and so which
credential it carries), how the method's own arguments become the request,
whether the RPC is idempotent (then retried on UNAVAILABLE), whether the
server streams its answer (then the responses are folded into one result),
and what the method returns from the response. A List RPC also names the
repeated field of its page, which gives the client an `iter_*` method walking
every page.

The request builder is a plain function whose signature and docstring are the
client method's (less `self` and the `timeout`, `metadata` and `retry` every
method takes); `install` puts one method per entry on a client class, made
by that twin's own `unary` / `pages` factories (blocking or asyncio). A new
RPC is therefore one entry here; scripts/gen_client_stubs.py then rewrites the
twins' type stubs (_client.pyi, _async_client.pyi) from the same table. `stream_changes`, the resuming change
stream, is the one call not in the table: it is a long-lived iterator, not a
call with a result (see `_core.ClientCore.stream_changes`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

from mailwatch_client import _common as common
from mailwatch_client._common import DEFAULT, Page
from mailwatch_client._proto.v1 import admin_service_pb2, mailbox_service_pb2, resources_pb2


def _same(response: Any) -> Any:
    return response


@dataclass(frozen=True)
class Call:
    """One RPC as the clients make it."""

    #: The stub (MailboxService with the API key, AdminService with the operator token).
    service: Literal["mailboxes", "admin"]
    #: The RPC's name on the stub.
    rpc: str
    #: The method's arguments -> the request message; its name, signature and docstring are the method's.
    request: Callable[..., Any]
    #: What the method returns (for a List call: the item type of its `Page`), as an annotation.
    returns: str
    #: Retried on UNAVAILABLE and RESOURCE_EXHAUSTED with RetryInfo (Google AIP-194: only idempotent calls are).
    idempotent: bool
    #: The response -> what the method returns (for a streaming call: the folded responses).
    response: Callable[[Any], Any] = _same
    #: Server streaming: each response is handed to `fold(request)`'s `add`, the method returns its `result()`.
    fold: Callable[[Any], Any] | None = None
    #: A List call: the response's repeated field; the method returns a `Page`, and `iter_<field>` walks them all.
    pages: str = ""
    #: Server streaming readable piece by piece as well: the twin adds `<name>_stream`, an iterator over the
    #: bytes `chunks(request)`'s `add` returns for each response (its `result()` checks the end), so the
    #: caller never holds the whole answer.
    chunks: Callable[[Any], Any] | None = None

    @property
    def name(self) -> str:
        return self.request.__name__


# --- MailboxService -------------------------------------------------------------


def register_mailbox(
    email_address: str,
    *,
    credentials: common.Credentials,
    label_ids: Sequence[str] = (),
    label_filter_behavior: int = resources_pb2.LABEL_FILTER_BEHAVIOR_UNSPECIFIED,
    message_metadata: bool | Sequence[str] = False,
    include_drafts: bool = False,
    backfill: mailbox_service_pb2.BackfillRequest | None = None,
) -> mailbox_service_pb2.RegisterMailboxRequest:
    """Start watching a mailbox (idempotent per address: retried on UNAVAILABLE).

    `message_metadata`: True for metadata (default headers) on MESSAGE_ADDED
    events, or the header names wanted; False for none. `include_drafts`: True
    for every draft version (added, and deleted when replaced); False leaves
    drafts out (a sent draft's message is delivered). `backfill`: deliver
    existing messages as MESSAGE_EXISTING events, e.g.
    `BackfillRequest(newest=500)` (the same request again keeps the backfill
    where it is, so retrying is safe).
    """
    return common.register_request(email_address, credentials, label_ids, label_filter_behavior, message_metadata,
                                   include_drafts, backfill)


def register_mailboxes(
    email_addresses: Sequence[str],
    *,
    service_account: mailbox_service_pb2.ServiceAccountCredentials | None = None,
    label_ids: Sequence[str] = (),
    label_filter_behavior: int = resources_pb2.LABEL_FILTER_BEHAVIOR_UNSPECIFIED,
    include_drafts: bool = False,
    backfill: mailbox_service_pb2.BackfillRequest | None = None,
) -> mailbox_service_pb2.BatchRegisterMailboxesRequest:
    """Register up to 1,000 addresses sharing one service account (the tenant's
    default when None); one result per address, in order, each with its own
    `status` (a google.rpc.Status: code 0 and `mailbox` on success).
    Idempotent per address: retried on UNAVAILABLE. `include_drafts` and
    `backfill` as in register_mailbox (the backfill for every address)."""
    return common.batch_register_request(email_addresses, service_account, label_ids, label_filter_behavior,
                                         include_drafts, backfill)


def stop_mailbox(mailbox_id: str) -> mailbox_service_pb2.StopMailboxRequest:
    """Stop watching a mailbox (idempotent)."""
    return mailbox_service_pb2.StopMailboxRequest(mailbox_id=mailbox_id)


def get_mailbox(mailbox_id: str) -> mailbox_service_pb2.GetMailboxRequest:
    """A mailbox of the tenant: its state, history ids, watch and last error."""
    return mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox_id)


def list_mailboxes(
    *, page_size: int = 0, page_token: str = "", states: Sequence[int | str] = ()
) -> mailbox_service_pb2.ListMailboxesRequest:
    """One page of mailboxes (states: MailboxState values or names like "ACTIVE")."""
    return mailbox_service_pb2.ListMailboxesRequest(
        page_size=page_size, page_token=page_token, states=common.mailbox_states(states)
    )


def get_message(
    mailbox_id: str, message_id: str, *, format: str = "metadata", metadata_headers: Sequence[str] = ()
) -> mailbox_service_pb2.GetMessageRequest:
    """Read a message of one of the tenant's mailboxes from Gmail ("metadata", "full" or "raw"),
    its streamed body chunks reassembled."""
    return common.get_message_request(mailbox_id, message_id, format, metadata_headers)


def get_attachment(mailbox_id: str, message_id: str, attachment_id: str) -> mailbox_service_pb2.GetAttachmentRequest:
    """The bytes of one attachment of a message (`attachment_id`: a part's `attachment_id` in
    `get_message(..., format="full")`), its streamed chunks reassembled."""
    return mailbox_service_pb2.GetAttachmentRequest(
        mailbox_id=mailbox_id, message_id=message_id, attachment_id=attachment_id
    )


def list_messages(
    mailbox_id: str,
    *,
    label_ids: Sequence[str] = (),
    query: str = "",
    include_labels: bool = False,
    include_spam_trash: bool = False,
    page_size: int = 0,
    page_token: str = "",
) -> mailbox_service_pb2.ListMessagesRequest:
    """One page of a mailbox's messages from Gmail, newest first (id, thread id, and the
    labels with `include_labels`): to reconcile after an outage or a RESYNC_REQUIRED.
    `label_ids`: only messages with all of them; `query`: Gmail search syntax."""
    return mailbox_service_pb2.ListMessagesRequest(
        mailbox_id=mailbox_id, label_ids=list(label_ids), query=query, include_labels=include_labels,
        include_spam_trash=include_spam_trash, page_size=page_size, page_token=page_token,
    )


def send_test_event(mailbox_id: str = "", *, note: str = "") -> mailbox_service_pb2.SendTestEventRequest:
    """Put a TEST event into the tenant's stream (for one mailbox, or tenant-wide); not retried."""
    return mailbox_service_pb2.SendTestEventRequest(mailbox_id=mailbox_id, note=note)


# --- AdminService (operator token) ------------------------------------------------


def create_tenant(name: str) -> admin_service_pb2.CreateTenantRequest:
    """Create a tenant (not idempotent: never retried)."""
    return admin_service_pb2.CreateTenantRequest(name=name)


def list_tenants(*, page_size: int = 0, page_token: str = "") -> admin_service_pb2.ListTenantsRequest:
    """One page of tenants."""
    return admin_service_pb2.ListTenantsRequest(page_size=page_size, page_token=page_token)


def create_api_key(
    *, tenant_id: str | None = None, tenant_name: str | None = None
) -> admin_service_pb2.CreateApiKeyRequest:
    """Issue an API key (`.key` is the plaintext, returned only here). Never retried."""
    return common.create_api_key_request(tenant_id, tenant_name)


def list_api_keys(
    *, tenant_id: str | None = None, tenant_name: str | None = None, page_size: int = 0, page_token: str = ""
) -> admin_service_pb2.ListApiKeysRequest:
    """One page of a tenant's API keys (give its id or its name)."""
    return common.tenant_selector(
        admin_service_pb2.ListApiKeysRequest(page_size=page_size, page_token=page_token), tenant_id, tenant_name
    )


def revoke_api_key(api_key_id: str) -> admin_service_pb2.RevokeApiKeyRequest:
    """Revoke an API key (idempotent)."""
    return admin_service_pb2.RevokeApiKeyRequest(api_key_id=api_key_id)


def set_tenant_limits(
    *, tenant_id: str | None = None, tenant_name: str | None = None, streams: int | None = None,
    rpcs_per_second: int | None = None, registrations_per_minute: int | None = None,
) -> admin_service_pb2.SetTenantLimitsRequest:
    """Replace a tenant's own limits (None: the deployment's; 0: no limit); returns the limits in force."""
    request = admin_service_pb2.SetTenantLimitsRequest(
        streams=streams, rpcs_per_second=rpcs_per_second, registrations_per_minute=registrations_per_minute)
    return common.tenant_selector(request, tenant_id, tenant_name)


def get_tenant_limits(
    *, tenant_id: str | None = None, tenant_name: str | None = None
) -> admin_service_pb2.GetTenantLimitsRequest:
    """The limits in force for a tenant (`own_fields` names those that are its own)."""
    return common.tenant_selector(admin_service_pb2.GetTenantLimitsRequest(), tenant_id, tenant_name)


#: The table: one entry per RPC, in the order of the services' protos.
CALLS: tuple[Call, ...] = (
    Call("mailboxes", "RegisterMailbox", register_mailbox, "resources_pb2.Mailbox", idempotent=True),
    Call("mailboxes", "BatchRegisterMailboxes", register_mailboxes,
         "list[mailbox_service_pb2.MailboxRegistrationResult]", idempotent=True,
         response=lambda response: list(response.results)),
    Call("mailboxes", "StopMailbox", stop_mailbox, "resources_pb2.Mailbox", idempotent=True),
    Call("mailboxes", "GetMailbox", get_mailbox, "resources_pb2.Mailbox", idempotent=True),
    Call("mailboxes", "ListMailboxes", list_mailboxes, "resources_pb2.Mailbox", idempotent=True, pages="mailboxes"),
    Call("mailboxes", "GetMessage", get_message, "FetchedMessage", idempotent=True, fold=common.MessageAssembler),
    Call("mailboxes", "ListMessages", list_messages, "mailbox_service_pb2.Message", idempotent=True,
         pages="messages"),
    Call("mailboxes", "GetAttachment", get_attachment, "bytes", idempotent=True, fold=common.AttachmentAssembler,
         chunks=common.AttachmentChunks),
    Call("mailboxes", "SendTestEvent", send_test_event, "resources_pb2.ChangeEvent", idempotent=False),
    Call("admin", "CreateTenant", create_tenant, "admin_service_pb2.Tenant", idempotent=False),
    Call("admin", "ListTenants", list_tenants, "admin_service_pb2.Tenant", idempotent=True, pages="tenants"),
    Call("admin", "CreateApiKey", create_api_key, "admin_service_pb2.CreateApiKeyResponse", idempotent=False),
    Call("admin", "ListApiKeys", list_api_keys, "admin_service_pb2.ApiKey", idempotent=True, pages="api_keys"),
    Call("admin", "RevokeApiKey", revoke_api_key, "admin_service_pb2.ApiKey", idempotent=True),
    Call("admin", "SetTenantLimits", set_tenant_limits, "admin_service_pb2.TenantLimits", idempotent=True),
    Call("admin", "GetTenantLimits", get_tenant_limits, "admin_service_pb2.TenantLimits", idempotent=True),
)


def result(call: Call, response: Any) -> Any:
    """What the method returns for `response` (a Page for a List call)."""
    if call.pages:
        return Page(list(getattr(response, call.pages)), response.next_page_token)
    return call.response(response)


# --- building the methods ------------------------------------------------------------

_OPTIONS = (
    inspect.Parameter("timeout", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT, annotation="float | None"),
    inspect.Parameter("metadata", inspect.Parameter.KEYWORD_ONLY, default=(), annotation="Metadata"),
    inspect.Parameter("retry", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="RetryConfig | None"),
)

def _signature(call: Call, returns: str, *, drop: str = "") -> inspect.Signature:
    """The request builder's signature as the method's: `self` first, the per-call options last."""
    signature = inspect.signature(call.request)
    own = [p for name, p in signature.parameters.items() if name != drop]
    self_ = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return signature.replace(parameters=[self_, *own, *_OPTIONS], return_annotation=returns)


def _named(method: Callable[..., Any], cls: type, name: str, signature: inspect.Signature, doc: str | None):
    method.__name__ = name
    method.__qualname__ = f"{cls.__name__}.{name}"
    method.__module__ = cls.__module__
    method.__signature__ = signature  # type: ignore[attr-defined]
    method.__doc__ = doc
    return method


def chunks_doc(call: Call) -> str:
    return (f"`{call.name}`'s bytes as they arrive, chunk by chunk (an iterator), without holding them "
            "whole; retried on UNAVAILABLE only until the first chunk, and ends with ValueError when "
            "fewer or more bytes arrive than announced.")


def install(
    cls: type,
    unary: Callable[[Call], Callable[..., Any]],
    pages: Callable[[Call], Callable[..., Any]],
    *,
    awaitable: bool,
    chunks: Callable[[Call], Callable[..., Any]] | None = None,
):
    """Give `cls` one method per entry of CALLS (an `iter_*` per List call, a `*_stream` per
    call with `chunks`).

    `unary(call)` returns the twin's method for one call: f(self, *args,
    timeout, metadata, retry, **kwargs). `pages(call)` the twin's walk over
    every page of a List call: f(self, *args, **kwargs) yielding the items.
    `chunks(call)` the twin's reader of a streamed answer piece by piece.
    `awaitable`: the twin's methods are coroutines and its walks async iterators.
    """
    for call in CALLS:
        returns = f"Page[{call.returns}]" if call.pages else call.returns
        method = unary(call)
        _named(method, cls, call.name, _signature(call, returns), call.request.__doc__)
        setattr(cls, call.name, method)
        if call.pages:
            name = f"iter_{call.pages}"
            doc = f"Every item of `{call.name}`, fetching pages as needed (`timeout` applies per page)."
            items = f"{'AsyncIterator' if awaitable else 'Iterator'}[{call.returns}]"
            setattr(cls, name, _named(pages(call), cls, name, _signature(call, items, drop="page_token"), doc))
        if call.chunks is not None and chunks is not None:
            name = f"{call.name}_stream"
            pieces = f"{'AsyncIterator' if awaitable else 'Iterator'}[bytes]"
            setattr(cls, name, _named(chunks(call), cls, name, _signature(call, pieces), chunks_doc(call)))
    return cls
