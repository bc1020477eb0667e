"""`MailwatchClient`: the synchronous client."""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator, Sequence

import grpc

from mailwatch_client import _common as common
from mailwatch_client._checkpoint import CheckpointStore
from mailwatch_client._common import DEFAULT, Metadata, Page, Start
from mailwatch_client._config import DEFAULT_STREAM_RETRY, NO_RETRY, KeepAliveConfig, RetryConfig, TLSConfig
from mailwatch_client._errors import from_rpc_error
from mailwatch_client._proto.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    mailbox_service_pb2,
    mailbox_service_pb2_grpc,
    resources_pb2,
)
from mailwatch_client._stream import ChangeStream, _StreamState


class MailwatchClient:
    """A blocking client for mailwatch's MailboxService and AdminService.

        with MailwatchClient("mailwatch.example.com:443", api_key, tls=True) as client:
            mailbox = client.register_mailbox("alice@example.com", credentials=oauth)
            for event in client.stream_changes(start="earliest"):
                ...

    `api_key` authenticates MailboxService calls; `operator_token` the admin
    calls. `tls`: False (plaintext, local development), True (system roots) or
    a `TLSConfig`. `timeout` is the default deadline of unary calls in seconds
    (None: none), covering all retry attempts; `retry` their default retry
    policy (UNAVAILABLE only, idempotent calls only). Every method also takes
    `timeout`, `metadata` and (when idempotent) `retry`. Errors are
    `RPCError` subclasses (exported by `mailwatch_client`).

    A client owns one channel and is safe to share between threads; close it
    (or use it as a context manager) when done.
    """

    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        *,
        operator_token: str | None = None,
        tls: bool | TLSConfig = False,
        timeout: float | None = 30.0,
        retry: RetryConfig = RetryConfig(),
        stream_retry: RetryConfig = DEFAULT_STREAM_RETRY,
        keepalive: KeepAliveConfig | None = None,
        metadata: Metadata = (),
        channel_options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self._timeout = timeout
        self._retry = retry
        self._stream_retry = stream_retry
        self._metadata = tuple(metadata)
        self._api_auth = common.bearer(api_key)
        self._operator_auth = common.bearer(operator_token)
        tls_config = common.tls_config(tls)
        options = common.channel_options(keepalive, channel_options, tls_config)
        if tls_config is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, common.channel_credentials(tls_config), options=options)
        self._mailboxes = mailbox_service_pb2_grpc.MailboxServiceStub(self._channel)
        self._admin = admin_service_pb2_grpc.AdminServiceStub(self._channel)

    # --- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "MailwatchClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------

    def _call(self, method, request, *, auth, timeout, metadata, retry: RetryConfig | None, idempotent: bool):
        policy = (retry or self._retry) if idempotent else NO_RETRY
        deadline = common.Deadline(self._timeout if timeout is DEFAULT else timeout)
        md = common.call_metadata(auth, self._metadata, metadata)
        attempts = 0
        while True:
            attempts += 1
            try:
                return method(request, timeout=deadline.remaining(), metadata=md)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or not policy.allows(attempts):
                    raise from_rpc_error(exc) from None
                delay = policy.backoff(attempts)
                if not deadline.allows_wait(delay):
                    raise from_rpc_error(exc) from None
            time.sleep(delay)

    # --- MailboxService -------------------------------------------------------

    def register_mailbox(
        self,
        email_address: str,
        *,
        credentials: common.Credentials,
        label_ids: Sequence[str] = (),
        label_filter_behavior: int = resources_pb2.LABEL_FILTER_BEHAVIOR_UNSPECIFIED,
        message_metadata: bool | Sequence[str] = False,
        timeout: float | None = DEFAULT,
        metadata: Metadata = (),
        retry: RetryConfig | None = None,
    ) -> resources_pb2.Mailbox:
        """Start watching a mailbox (idempotent per address: retried on UNAVAILABLE).

        `message_metadata`: True for metadata (default headers) on MESSAGE_ADDED
        events, or the header names wanted; False for none.
        """
        request = common.register_request(
            email_address, credentials, label_ids, label_filter_behavior, message_metadata
        )
        return self._call(self._mailboxes.RegisterMailbox, request, auth=self._api_auth, timeout=timeout,
                          metadata=metadata, retry=retry, idempotent=True)

    def register_mailboxes(
        self,
        email_addresses: Sequence[str],
        *,
        service_account: mailbox_service_pb2.ServiceAccountCredentials | None = None,
        label_ids: Sequence[str] = (),
        label_filter_behavior: int = resources_pb2.LABEL_FILTER_BEHAVIOR_UNSPECIFIED,
        timeout: float | None = DEFAULT,
        metadata: Metadata = (),
        retry: RetryConfig | None = None,
    ) -> list[mailbox_service_pb2.MailboxRegistrationResult]:
        """Register up to 1,000 addresses sharing one service account (the tenant's
        default when None); one result per address, in order, each with its own
        `status` (a google.rpc.Status: code 0 and `mailbox` on success).
        Idempotent per address: retried on UNAVAILABLE."""
        request = common.batch_register_request(email_addresses, service_account, label_ids, label_filter_behavior)
        response = self._call(self._mailboxes.BatchRegisterMailboxes, request, auth=self._api_auth,
                                  timeout=timeout, metadata=metadata, retry=retry, idempotent=True)
        return list(response.results)

    def stop_mailbox(
        self, mailbox_id: str, *, timeout: float | None = DEFAULT, metadata: Metadata = (),
        retry: RetryConfig | None = None,
    ) -> resources_pb2.Mailbox:
        """Stop watching a mailbox (idempotent)."""
        request = mailbox_service_pb2.StopMailboxRequest(mailbox_id=mailbox_id)
        return self._call(self._mailboxes.StopMailbox, request, auth=self._api_auth, timeout=timeout,
                          metadata=metadata, retry=retry, idempotent=True)

    def get_mailbox(
        self, mailbox_id: str, *, timeout: float | None = DEFAULT, metadata: Metadata = (),
        retry: RetryConfig | None = None,
    ) -> resources_pb2.Mailbox:
        request = mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox_id)
        return self._call(self._mailboxes.GetMailbox, request, auth=self._api_auth, timeout=timeout,
                          metadata=metadata, retry=retry, idempotent=True)

    def list_mailboxes(
        self, *, page_size: int = 0, page_token: str = "", states: Sequence[int | str] = (),
        timeout: float | None = DEFAULT, metadata: Metadata = (), retry: RetryConfig | None = None,
    ) -> Page[resources_pb2.Mailbox]:
        """One page of mailboxes (states: MailboxState values or names like "ACTIVE")."""
        request = mailbox_service_pb2.ListMailboxesRequest(
            page_size=page_size, page_token=page_token, states=common.mailbox_states(states)
        )
        response = self._call(self._mailboxes.ListMailboxes, request, auth=self._api_auth, timeout=timeout,
                              metadata=metadata, retry=retry, idempotent=True)
        return Page(list(response.mailboxes), response.next_page_token)

    def iter_mailboxes(
        self, *, page_size: int = 0, states: Sequence[int | str] = (), timeout: float | None = DEFAULT,
        metadata: Metadata = (), retry: RetryConfig | None = None,
    ) -> Iterator[resources_pb2.Mailbox]:
        """Every mailbox, fetching pages as needed (`timeout` applies per page)."""
        token = ""
        while True:
            page = self.list_mailboxes(page_size=page_size, page_token=token, states=states, timeout=timeout,
                                       metadata=metadata, retry=retry)
            yield from page.items
            token = page.next_page_token
            if not token:
                return

    def stream_changes(
        self,
        *,
        mailbox_ids: Sequence[str] = (),
        event_types: Sequence[int | str] = (),
        start: Start = "now",
        checkpoint: CheckpointStore | None = None,
        max_batch_size: int = 0,
        heartbeat_interval: float | None = None,
        idle_timeout: float | None = DEFAULT,
        metadata: Metadata = (),
        retry: RetryConfig | None = None,
    ) -> ChangeStream:
        """A resuming iterator of change events (see `ChangeStream`).

        `start`: "now", "earliest" or a cursor; ignored when `checkpoint`
        holds a position. `event_types`: EventType values or names
        ("MESSAGE_ADDED"). `idle_timeout`: reconnect when nothing (not even a
        heartbeat) arrived for that long; default 3 heartbeat intervals
        (15 s when `heartbeat_interval` is None), None disables it.
        `retry`: the reconnect policy (default: forever, backoff up to 10 s).
        """
        if idle_timeout is DEFAULT:
            idle_timeout = 3 * (heartbeat_interval or 15.0) + 5.0
        state = _StreamState(
            mailbox_ids=mailbox_ids, event_types=event_types, start=start, checkpoint=checkpoint,
            max_batch_size=max_batch_size, heartbeat_interval=heartbeat_interval,
            retry=retry or self._stream_retry, idle_timeout=idle_timeout,
        )
        md = common.call_metadata(self._api_auth, self._metadata, metadata)
        return ChangeStream(lambda request: self._mailboxes.StreamChanges(request, metadata=md), state)

    def get_message(
        self, mailbox_id: str, message_id: str, *, format: str = "metadata", metadata_headers: Sequence[str] = (),
        timeout: float | None = DEFAULT, metadata: Metadata = (), retry: RetryConfig | None = None,
    ) -> common.FetchedMessage:
        """Read a message of one of the tenant's mailboxes from Gmail ("metadata", "full" or "raw"),
        its streamed body chunks reassembled."""
        request = common.get_message_request(mailbox_id, message_id, format, metadata_headers)

        def fetch(request, *, timeout, metadata):
            assembler = common.MessageAssembler(format)
            for response in self._mailboxes.GetMessage(request, timeout=timeout, metadata=metadata):
                assembler.add(response)
            return assembler.result()

        return self._call(fetch, request, auth=self._api_auth, timeout=timeout, metadata=metadata,
                          retry=retry, idempotent=True)

    def send_test_event(
        self, mailbox_id: str = "", *, note: str = "", timeout: float | None = DEFAULT, metadata: Metadata = (),
        retry: RetryConfig | None = None,
    ) -> resources_pb2.ChangeEvent:
        """Put a TEST event into the tenant's stream (for one mailbox, or tenant-wide); not retried."""
        request = mailbox_service_pb2.SendTestEventRequest(mailbox_id=mailbox_id, note=note)
        return self._call(self._mailboxes.SendTestEvent, request, auth=self._api_auth, timeout=timeout,
                          metadata=metadata, retry=retry, idempotent=False)

    # --- AdminService (operator token) ----------------------------------------

    def create_tenant(
        self, name: str, *, timeout: float | None = DEFAULT, metadata: Metadata = ()
    ) -> admin_service_pb2.Tenant:
        """Create a tenant (not idempotent: never retried)."""
        return self._call(self._admin.CreateTenant, admin_service_pb2.CreateTenantRequest(name=name),
                          auth=self._operator_auth, timeout=timeout, metadata=metadata, retry=None, idempotent=False)

    def list_tenants(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = DEFAULT,
        metadata: Metadata = (), retry: RetryConfig | None = None,
    ) -> Page[admin_service_pb2.Tenant]:
        request = admin_service_pb2.ListTenantsRequest(page_size=page_size, page_token=page_token)
        response = self._call(self._admin.ListTenants, request, auth=self._operator_auth, timeout=timeout,
                              metadata=metadata, retry=retry, idempotent=True)
        return Page(list(response.tenants), response.next_page_token)

    def iter_tenants(
        self, *, page_size: int = 0, timeout: float | None = DEFAULT, metadata: Metadata = (),
        retry: RetryConfig | None = None,
    ) -> Iterator[admin_service_pb2.Tenant]:
        token = ""
        while True:
            page = self.list_tenants(page_size=page_size, page_token=token, timeout=timeout, metadata=metadata,
                                     retry=retry)
            yield from page.items
            token = page.next_page_token
            if not token:
                return

    def create_api_key(
        self, *, tenant_id: str | None = None, tenant_name: str | None = None, timeout: float | None = DEFAULT,
        metadata: Metadata = (),
    ) -> admin_service_pb2.CreateApiKeyResponse:
        """Issue an API key (`.key` is the plaintext, returned only here). Never retried."""
        request = common.create_api_key_request(tenant_id, tenant_name)
        return self._call(self._admin.CreateApiKey, request, auth=self._operator_auth, timeout=timeout,
                          metadata=metadata, retry=None, idempotent=False)

    def list_api_keys(
        self, *, tenant_id: str | None = None, tenant_name: str | None = None, page_size: int = 0,
        page_token: str = "", timeout: float | None = DEFAULT, metadata: Metadata = (),
        retry: RetryConfig | None = None,
    ) -> Page[admin_service_pb2.ApiKey]:
        request = common.tenant_selector(
            admin_service_pb2.ListApiKeysRequest(page_size=page_size, page_token=page_token), tenant_id, tenant_name
        )
        response = self._call(self._admin.ListApiKeys, request, auth=self._operator_auth, timeout=timeout,
                              metadata=metadata, retry=retry, idempotent=True)
        return Page(list(response.api_keys), response.next_page_token)

    def iter_api_keys(
        self, *, tenant_id: str | None = None, tenant_name: str | None = None, page_size: int = 0,
        timeout: float | None = DEFAULT, metadata: Metadata = (), retry: RetryConfig | None = None,
    ) -> Iterator[admin_service_pb2.ApiKey]:
        token = ""
        while True:
            page = self.list_api_keys(tenant_id=tenant_id, tenant_name=tenant_name, page_size=page_size,
                                      page_token=token, timeout=timeout, metadata=metadata, retry=retry)
            yield from page.items
            token = page.next_page_token
            if not token:
                return

    def revoke_api_key(
        self, api_key_id: str, *, timeout: float | None = DEFAULT, metadata: Metadata = (),
        retry: RetryConfig | None = None,
    ) -> admin_service_pb2.ApiKey:
        """Revoke an API key (idempotent)."""
        request = admin_service_pb2.RevokeApiKeyRequest(api_key_id=api_key_id)
        return self._call(self._admin.RevokeApiKey, request, auth=self._operator_auth, timeout=timeout,
                          metadata=metadata, retry=retry, idempotent=True)
