"""What both client twins are: settings, channel, stubs, credentials and the change stream.

A twin (`_client.MailwatchClient`, `_async_client.AsyncMailwatchClient`)
adds only what blocking and asyncio code do differently: which grpc module
makes the channel, how a unary call waits between attempts, how a streamed
answer is read, and closing. Its RPC methods come from the table in
`_calls.py`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar, Iterable, Sequence

from mailwatch_client import _common as common
from mailwatch_client._calls import Call
from mailwatch_client._checkpoint import CheckpointStore
from mailwatch_client._common import DEFAULT, Metadata, Start
from mailwatch_client._config import DEFAULT_STREAM_RETRY, NO_RETRY, KeepAliveConfig, RetryConfig, TLSConfig
from mailwatch_client._proto.v1 import admin_service_pb2_grpc, mailbox_service_pb2_grpc
from mailwatch_client._stream import _StreamState


class ClientCore:
    """The state and plumbing shared by the sync and asyncio clients (see `MailwatchClient`)."""

    #: `grpc` or `grpc.aio`: where the channel comes from.
    _channels: ClassVar[ModuleType]
    #: `ChangeStream` or `AsyncChangeStream`.
    _change_stream: ClassVar[type]

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
            self._channel = self._channels.insecure_channel(target, options=options)
        else:
            credentials = common.channel_credentials(tls_config)
            self._channel = self._channels.secure_channel(target, credentials, options=options)
        self._mailboxes = mailbox_service_pb2_grpc.MailboxServiceStub(self._channel)
        self._admin = admin_service_pb2_grpc.AdminServiceStub(self._channel)

    def _stub_method(self, call: Call):
        return getattr(self._mailboxes if call.service == "mailboxes" else self._admin, call.rpc)

    def _auth(self, call: Call):
        return self._api_auth if call.service == "mailboxes" else self._operator_auth

    def _attempts(self, timeout, retry: RetryConfig | None, idempotent: bool) -> common.Attempts:
        policy = (retry or self._retry) if idempotent else NO_RETRY
        return common.Attempts(policy, self._timeout if timeout is DEFAULT else timeout)

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
        partition: tuple[int, int] | None = None,
    ):
        """A resuming iterator of change events (`ChangeStream`; `AsyncChangeStream` on the asyncio client).

        `start`: "now", "earliest" or a cursor; ignored when `checkpoint`
        holds a position. `event_types`: EventType values or names
        ("MESSAGE_ADDED"). `idle_timeout`: reconnect when nothing (not even a
        heartbeat) arrived for that long; default 3 heartbeat intervals
        (15 s when `heartbeat_interval` is None), None disables it.
        `retry`: the reconnect policy (default: forever, backoff up to 10 s).
        `partition`: (index, count): only the events of that share of the
        tenant's mailboxes, so `count` replicas can split one stream (each
        with its own checkpoint).
        """
        if idle_timeout is DEFAULT:
            idle_timeout = 3 * (heartbeat_interval or 15.0) + 5.0
        state = _StreamState(
            mailbox_ids=mailbox_ids, event_types=event_types, start=start, checkpoint=checkpoint,
            max_batch_size=max_batch_size, heartbeat_interval=heartbeat_interval,
            retry=retry or self._stream_retry, idle_timeout=idle_timeout, partition=partition,
        )
        md = common.call_metadata(self._api_auth, self._metadata, metadata)
        return self._change_stream(lambda request: self._mailboxes.StreamChanges(request, metadata=md), state)
