"""Ingest pulls the deployment's subscription and every tenant's, each on its own: a tenant with its
own project's topic and subscription receives events, and one tenant's deleted subscription is
visible to it and to the operator (status, metric) while the others keep flowing."""

from __future__ import annotations

import json
import time

import pytest
from google.cloud import pubsub_v1
from prometheus_client import REGISTRY

from mailwatch.v1 import admin_service_pb2, mailbox_service_pb2, resources_pb2
from tests.fixtures.service import OPERATOR_TOKEN
from tests.fixtures.pipeline import collect, eventually, message_events
from tests.fixtures.rpc import tenant_topic

pytestmark = pytest.mark.integration

OPERATOR = [("authorization", f"Bearer {OPERATOR_TOKEN}")]


async def own_project_tenant(service, project: str, email: str):
    """A tenant whose Google settings name its own project's key, topic and subscription; one mailbox."""
    tenant_id, auth = await service.new_tenant()
    names = tenant_topic(project)
    key = service.sim.create_service_account_key(project_id=project)
    await service.admin.SetTenantGoogleSettings(admin_service_pb2.SetTenantGoogleSettingsRequest(
        tenant_id=tenant_id, pubsub_topic=names["topic"], pubsub_subscription=names["subscription"],
        service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(key)),
    ), metadata=OPERATOR)
    service.sim.create_mailbox(email)
    await service.mailboxes.RegisterMailbox(mailbox_service_pb2.RegisterMailboxRequest(email_address=email),
                                            metadata=auth)
    return tenant_id, auth, names


def added(events) -> list[str]:
    return [mid for kind, mid, _ in message_events(events) if kind == "EVENT_TYPE_MESSAGE_ADDED"]


async def settings_of(service, auth):
    return await service.mailboxes.GetGoogleSettings(mailbox_service_pb2.GetGoogleSettingsRequest(), metadata=auth)


async def test_a_deleted_tenant_subscription_is_visible_and_leaves_the_others_flowing(make_service):
    async with make_service(poll_enabled=False, ingest_sources_refresh_seconds=0.2) as service:
        broken_id, broken, broken_names = await own_project_tenant(service, "tenant-x-proj", "x@tenant-x.test")
        _, healthy, healthy_names = await own_project_tenant(service, "tenant-y-proj", "y@tenant-y.test")

        # Notifications reach each tenant through its own subscription (the poll is off).
        service.sim.advance_clock(2)  # past Gmail's one notification per second (the watch sent one)
        first = service.sim.insert_message("y@tenant-y.test", label_ids=["INBOX"])["id"]
        assert first in added(await collect(service, healthy, lambda ev: first in added(ev)))

        async def healthy_is_ok():
            return (await settings_of(service, healthy)).subscription_status.state == \
                resources_pb2.SUBSCRIPTION_STATE_OK

        await eventually(healthy_is_ok, timeout=30)

        with pubsub_v1.SubscriberClient() as subscriber:
            subscriber.delete_subscription(subscription=broken_names["subscription"])

        async def broken_is_failing():
            status = (await settings_of(service, broken)).subscription_status
            return status if status.state == resources_pb2.SUBSCRIPTION_STATE_FAILING else None

        status = await eventually(broken_is_failing, timeout=30)
        assert "NotFound" in status.last_error and status.consecutive_failures >= 1
        assert REGISTRY.get_sample_value("mailwatch_ingest_subscription_healthy", {"owner": broken_id}) == 0
        listed = await service.admin.ListSubscriptionStatuses(admin_service_pb2.ListSubscriptionStatusesRequest(),
                                                              metadata=OPERATOR)
        states = {s.status.subscription: (s.tenant_id, s.status.state) for s in listed.statuses}
        assert states[broken_names["subscription"]] == (broken_id, resources_pb2.SUBSCRIPTION_STATE_FAILING)
        assert states[service.subscription][0] == ""  # the deployment's own

        # The healthy tenant still gets notifications; it never sees the other's status.
        service.sim.advance_clock(2)
        later = service.sim.insert_message("y@tenant-y.test", label_ids=["INBOX"])["id"]
        assert later in added(await collect(service, healthy, lambda ev: later in added(ev)))
        mine = await settings_of(service, healthy)
        assert mine.subscription_status.subscription == healthy_names["subscription"]
        assert mine.subscription_status.state == resources_pb2.SUBSCRIPTION_STATE_OK



async def test_a_pull_left_unanswered_does_not_make_a_failing_subscription_healthy(sessions):
    """On a loaded host the emulator may not answer a pull of a deleted subscription within the
    pull's timeout: that silence is a quiet subscription's usual outcome, not proof that a
    failing one works again. A healthy one stays healthy through it; only an answer heals."""
    import uuid

    from google.api_core import exceptions as google_exceptions

    from mailwatch.clock import SystemClock
    from mailwatch.ingest.sources import SubscriptionHealth

    health = SubscriptionHealth(sessions, SystemClock())
    owner = str(uuid.uuid4())
    failing, quiet = "projects/p/subscriptions/deleted", "projects/p/subscriptions/quiet"
    health.owned_by(failing, owner)

    def gauge() -> float | None:
        return REGISTRY.get_sample_value("mailwatch_ingest_subscription_healthy", {"owner": owner})

    sent_before_the_failure = time.monotonic()
    await health.record(failing, google_exceptions.NotFound("Subscription does not exist"))
    await health.record_unanswered(failing)
    assert gauge() == 0
    # Another puller's pull, sent before that NotFound, answered (empty) after it: no news.
    await health.record(failing, None, sent_at=sent_before_the_failure)
    assert gauge() == 0
    await health.record(failing, None, sent_at=time.monotonic())  # a pull sent since, answered
    assert gauge() == 1
    await health.record(failing, google_exceptions.NotFound("Subscription does not exist"))
    await health.record(failing, None)  # a pull answered again
    assert gauge() == 1
    await health.record_unanswered(failing)
    assert gauge() == 1
    health.owned_by(quiet, owner)
    await health.record_unanswered(quiet)  # never failed: quiet is healthy
    assert gauge() == 1
