"""Small helpers shared by the service integration tests."""

from __future__ import annotations

import uuid

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mailwatch.v1 import mailbox_service_pb2, resources_pb2
from tests.fixtures.factory import sa_request
from tests.fixtures.names import TEST_PROJECT

__all__ = ["ACTIVE", "STOPPED", "error_details", "oauth_request", "sa_request", "status_detail", "tenant_topic"]


def oauth_request(sim, email: str, **fields) -> tuple[mailbox_service_pb2.RegisterMailboxRequest, dict, str]:
    sim.create_mailbox(email)
    client = sim.create_oauth_client(project_id=TEST_PROJECT)
    refresh_token = sim.issue_refresh_token(client["clientId"], email)
    request = mailbox_service_pb2.RegisterMailboxRequest(
        email_address=email,
        oauth=mailbox_service_pb2.OAuthCredentials(
            client_id=client["clientId"], client_secret=client["clientSecret"], refresh_token=refresh_token
        ),
        **fields,
    )
    return request, client, refresh_token


def status_detail(status, kind):
    """The first detail of type `kind` in a google.rpc.Status, or None."""
    packed = next((detail for detail in status.details if detail.Is(kind.DESCRIPTOR)), None)
    return None if packed is None else kind.FromString(packed.value)


def error_details(error: grpc.aio.AioRpcError):
    """(ErrorInfo, BadRequest or None) from a rich status."""
    status = rpc_status.from_call(error)
    if status is None:
        return None, None
    return status_detail(status, error_details_pb2.ErrorInfo), status_detail(status, error_details_pb2.BadRequest)


ACTIVE = resources_pb2.MAILBOX_STATE_ACTIVE
STOPPED = resources_pb2.MAILBOX_STATE_STOPPED


def tenant_topic(project: str) -> dict:
    """A fresh topic + pull subscription in `project` on the emulator: {"topic", "subscription"}."""
    from google.cloud import pubsub_v1

    suffix = uuid.uuid4().hex[:8]
    names = {"topic": f"projects/{project}/topics/gmail-{suffix}",
             "subscription": f"projects/{project}/subscriptions/mailwatch-{suffix}"}
    with pubsub_v1.PublisherClient() as publisher:
        publisher.create_topic(name=names["topic"])
    with pubsub_v1.SubscriberClient() as subscriber:
        subscriber.create_subscription(name=names["subscription"], topic=names["topic"])
    return names
