"""The three Pub/Sub calls pull ingest makes (pull, acknowledge, modifyAckDeadline), on the event loop.

grpc.aio on a channel of our own, with the protobuf messages google-cloud-pubsub ships
(`PullRequest.pb()` and the like): no worker thread per call, no proto-plus wrapping of
requests and answers (a pulled batch is read field by field from the raw protobuf), and none
of the generated asyncio client's per-call layers (its logging interceptor, on the channel,
runs every call through a task of its own). What those layers gave ingest is kept here: the
channel (the emulator when PUBSUB_EMULATOR_HOST is set, as every google-cloud client does,
else Pub/Sub with the application's default credentials), the routing and client headers,
errors as `google.api_core.exceptions`, and the retry of transient errors the generated
client applies by default (so a blip does not count as a failing subscription).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

import grpc
from google.api_core import exceptions, grpc_helpers_async
from google.api_core.gapic_v1 import routing_header
from google.api_core.retry import AsyncRetry, if_exception_type
from google.protobuf import empty_pb2
from google.pubsub_v1.services.subscriber.transports.base import DEFAULT_CLIENT_INFO, SubscriberTransport
from google.pubsub_v1.types import pubsub

PullResponse = pubsub.PullResponse.pb()
_PullRequest = pubsub.PullRequest.pb()
_AcknowledgeRequest = pubsub.AcknowledgeRequest.pb()
_ModifyAckDeadlineRequest = pubsub.ModifyAckDeadlineRequest.pb()

# As the generated client's transport: pulled batches can be large; keepalive finds a dead peer.
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_metadata_size", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30000),
]


def _retry(*retryable: type[Exception]) -> AsyncRetry:
    """The generated client's default retry for these calls: which codes, how long."""
    return AsyncRetry(initial=0.1, maximum=60.0, multiplier=1.3, predicate=if_exception_type(*retryable),
                      deadline=60.0)


_PULL_RETRY = _retry(exceptions.Aborted, exceptions.InternalServerError, exceptions.ServiceUnavailable,
                     exceptions.Unknown)
_ACK_RETRY = _retry(exceptions.ServiceUnavailable)


class Subscriber:
    """Pull, acknowledge and nack on one grpc.aio channel; `close()` closes it."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._pull_rpc = channel.unary_unary(
            "/google.pubsub.v1.Subscriber/Pull",
            request_serializer=_PullRequest.SerializeToString, response_deserializer=PullResponse.FromString)
        self._acknowledge_rpc = channel.unary_unary(
            "/google.pubsub.v1.Subscriber/Acknowledge",
            request_serializer=_AcknowledgeRequest.SerializeToString,
            response_deserializer=empty_pb2.Empty.FromString)
        self._modify_rpc = channel.unary_unary(
            "/google.pubsub.v1.Subscriber/ModifyAckDeadline",
            request_serializer=_ModifyAckDeadlineRequest.SerializeToString,
            response_deserializer=empty_pb2.Empty.FromString)
        self._metadata: dict[str, tuple[tuple[str, str], ...]] = {}
        self._pull = _PULL_RETRY(self._call)
        self._ack = _ACK_RETRY(self._call)

    async def pull(self, subscription: str, max_messages: int, timeout: float):
        """Up to `max_messages` leased messages (the raw `PullResponse`); DeadlineExceeded if none
        came within `timeout` (each attempt's)."""
        request = _PullRequest(subscription=subscription, max_messages=max_messages)
        return await self._pull(self._pull_rpc, request, subscription, timeout)

    async def acknowledge(self, subscription: str, ack_ids: Sequence[str], timeout: float) -> None:
        request = _AcknowledgeRequest(subscription=subscription, ack_ids=ack_ids)
        await self._ack(self._acknowledge_rpc, request, subscription, timeout)

    async def modify_ack_deadline(self, subscription: str, ack_ids: Sequence[str], seconds: int,
                                  timeout: float) -> None:
        request = _ModifyAckDeadlineRequest(subscription=subscription, ack_ids=ack_ids,
                                            ack_deadline_seconds=seconds)
        await self._ack(self._modify_rpc, request, subscription, timeout)

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, rpc, request, subscription: str, timeout: float):
        try:
            return await rpc(request, timeout=timeout, metadata=self._metadata_for(subscription))
        except grpc.aio.AioRpcError as exc:
            raise exceptions.from_grpc_error(exc) from exc

    def _metadata_for(self, subscription: str) -> tuple[tuple[str, str], ...]:
        metadata = self._metadata.get(subscription)
        if metadata is None:
            metadata = self._metadata[subscription] = (
                routing_header.to_grpc_metadata((("subscription", subscription),)),
                DEFAULT_CLIENT_INFO.to_grpc_metadata(),
            )
        return metadata


async def connect() -> Subscriber:
    """A subscriber on the emulator (PUBSUB_EMULATOR_HOST) or on Pub/Sub with the default credentials.

    The channel is made on the event loop (grpc.aio binds it to the running loop); looking up the
    credentials may read files or ask the metadata server, so that runs in a thread, once.
    """
    emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    if emulator:
        return Subscriber(grpc.aio.insecure_channel(emulator, options=_CHANNEL_OPTIONS))
    import google.auth

    credentials, _ = await asyncio.to_thread(google.auth.default)
    host = SubscriberTransport.DEFAULT_HOST
    channel = grpc_helpers_async.create_channel(
        f"{host}:443", credentials=credentials, default_scopes=SubscriberTransport.AUTH_SCOPES,
        default_host=host, options=_CHANNEL_OPTIONS,
    )
    return Subscriber(channel)
