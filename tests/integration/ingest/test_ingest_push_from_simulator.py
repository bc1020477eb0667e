"""The Java-free path: the simulator pushes Gmail notifications to mailwatch's push endpoint.

No Pub/Sub emulator: the simulator plays Pub/Sub's push delivery and signs
each request's ID token with its own issuer; mailwatch verifies it with its
production code (issuer, audience, email, signature from the published keys),
configured with the simulator's issuer and certificates URL.
"""

from __future__ import annotations

import pytest

from mailwatch_devstack.gmail_sim import GmailSimulator, SimulatorControl
from tests.fixtures.names import TEST_PROJECT
from tests.fixtures.service import run_service, service_settings
from tests.fixtures.pipeline import collect, eventually, message_events
from tests.fixtures.rpc import sa_request
from tests.fixtures.simulator import TestSimulator

pytestmark = pytest.mark.integration

TOPIC = f"projects/{TEST_PROJECT}/topics/gmail-push"
SUBSCRIPTION = f"projects/{TEST_PROJECT}/subscriptions/mailwatch-push"
PUSHER = f"pubsub-push@{TEST_PROJECT}.iam.gserviceaccount.com"
AUDIENCE = "https://mailwatch.test/pubsub/push"


@pytest.fixture
def push_sim():
    """A simulator with no Pub/Sub emulator: it delivers to push subscriptions itself."""
    sim = GmailSimulator(pubsub_emulator_host=None, default_project=TEST_PROJECT)
    url = sim.start(host="127.0.0.1", port=0)
    try:
        yield TestSimulator(url)
    finally:
        sim.stop()


def push_service(database_url, sim: SimulatorControl, **overrides):
    values = dict(
        pubsub_subscriptions=(), poll_enabled=False, http_listen="127.0.0.1:0", push_enabled=True,
        push_audience=AUDIENCE, push_service_account_email=PUSHER, push_certs_url=sim.oidc()["certsUri"],
        push_issuers=(sim.oidc()["issuer"],),
    )
    settings = service_settings(database_url, sim.url, TOPIC, "", **{**values, **overrides})
    return run_service(settings, sim, TOPIC, "")


def subscribe(service, sim: SimulatorControl, audience: str = AUDIENCE) -> None:
    sim.create_push_subscription(SUBSCRIPTION, TOPIC, f"http://127.0.0.1:{service.app.http_port}/pubsub/push",
                                 service_account_email=PUSHER, audience=audience)


async def test_pushed_notifications_reach_the_stream_without_an_emulator(database_url, push_sim):
    async with push_service(database_url, push_sim) as service:
        assert service.app.ingestor is None  # nothing pulls: every notification comes by push
        subscribe(service, push_sim)
        _, auth = await service.new_tenant()
        await service.mailboxes.RegisterMailbox(sa_request(push_sim, "push@example.com"), metadata=auth)
        first = push_sim.insert_message("push@example.com", label_ids=["INBOX"])
        push_sim.advance_clock(2)  # past Gmail's one notification per second per user
        second = push_sim.insert_message("push@example.com", label_ids=["INBOX"])

        events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 2)
        assert [m[:2] for m in message_events(events)] == [
            ("EVENT_TYPE_MESSAGE_ADDED", first["id"]), ("EVENT_TYPE_MESSAGE_ADDED", second["id"])]
        assert push_sim.flush_notifications(timeout=30)
        statuses = {n["status"] for n in push_sim.notifications("push@example.com")}
        assert statuses <= {"pushed", "dropped_rate_limit"} and "pushed" in statuses


@pytest.mark.parametrize("trusted, audience", [
    pytest.param("google", AUDIENCE, id="issuer-not-trusted"),
    pytest.param("simulator", "https://someone-else.test/push", id="wrong-audience"),
])
async def test_tokens_mailwatch_must_not_accept_are_refused(database_url, push_sim, trusted, audience):
    issuers = {"google": ("https://accounts.google.com",), "simulator": (push_sim.oidc()["issuer"],)}[trusted]
    async with push_service(database_url, push_sim, push_issuers=issuers) as service:
        subscribe(service, push_sim, audience=audience)
        _, auth = await service.new_tenant()
        await service.mailboxes.RegisterMailbox(sa_request(push_sim, "refused@example.com"), metadata=auth)

        def refused():
            return [n for n in push_sim.notifications("refused@example.com") if n.get("lastError") == "HTTP 403"]

        await eventually(refused, timeout=30)
        assert all(n["status"] == "queued" for n in refused())  # Pub/Sub would keep redelivering


async def test_a_tenants_own_push_subscription_and_audience_are_accepted(database_url, push_sim):
    """A tenant in its own project pushes with its own audience, signed by its project's service account."""
    import json

    from mailwatch.v1 import admin_service_pb2, mailbox_service_pb2
    from tests.fixtures.service import OPERATOR_TOKEN

    tenant_topic = "projects/tenant-push-proj/topics/gmail"
    tenant_audience = "https://tenant-push.example/push"
    async with push_service(database_url, push_sim, ingest_sources_refresh_seconds=0.2) as service:
        tenant_id, auth = await service.new_tenant()
        key = push_sim.create_service_account_key(project_id="tenant-push-proj")
        await service.admin.SetTenantGoogleSettings(admin_service_pb2.SetTenantGoogleSettingsRequest(
            tenant_id=tenant_id, pubsub_topic=tenant_topic, push_audience=tenant_audience,
            service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(key)),
        ), metadata=[("authorization", f"Bearer {OPERATOR_TOKEN}")])
        endpoint = f"http://127.0.0.1:{service.app.http_port}/pubsub/push"
        push_sim.create_push_subscription("projects/tenant-push-proj/subscriptions/push", tenant_topic, endpoint,
                                          service_account_email="pusher@tenant-push-proj.iam.gserviceaccount.com",
                                          audience=tenant_audience)
        # Another project's signer claiming the tenant's audience is refused.
        push_sim.create_push_subscription("projects/tenant-push-proj/subscriptions/forged", tenant_topic, endpoint,
                                          service_account_email="pusher@elsewhere.iam.gserviceaccount.com",
                                          audience=tenant_audience)

        push_sim.create_mailbox("own@tenant-push.test")
        await service.mailboxes.RegisterMailbox(
            mailbox_service_pb2.RegisterMailboxRequest(email_address="own@tenant-push.test"), metadata=auth)
        push_sim.advance_clock(2)
        message = push_sim.insert_message("own@tenant-push.test", label_ids=["INBOX"])
        events = await collect(service, auth, lambda ev: message["id"] in [e.message_id for e in ev])
        assert message["id"] in [m[1] for m in message_events(events)]

        def forged_refused():
            return [n for n in push_sim.notifications("own@tenant-push.test") if n.get("lastError") == "HTTP 403"]

        await eventually(forged_refused, timeout=30)
