"""A watch Gmail refuses for its topic (no publisher grant for Gmail) or its label filter (a
label id the mailbox does not have): a clear answer at registration; at renewal one terminal
state with the reason, one event, and no more tries. Against the simulator."""

from __future__ import annotations

import grpc
import pytest

from mailwatch.clock import OffsetClock
from mailwatch.v1 import mailbox_service_pb2, resources_pb2
from tests.fixtures.pipeline import DAY, advance, claims_one, collect, get_mailbox as get, register_sa_mailbox, types
from tests.fixtures.rpc import error_details, sa_request

pytestmark = pytest.mark.integration

NOT_AUTHORIZED = "User not authorized to perform this action."


async def test_registration_on_a_topic_gmail_may_not_publish_to(service):
    service.sim.set_gmail_publisher(service.topic, granted=False)
    _, auth = await service.new_tenant()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.mailboxes.RegisterMailbox(sa_request(service.sim, "topic@example.com"), metadata=auth)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(refused.value)[0].reason == "GMAIL_TOPIC_NOT_PUBLISHABLE"
    assert NOT_AUTHORIZED in refused.value.details() and service.topic in refused.value.details()


async def _renewal_refused(service, clock, auth, mailbox, email: str) -> resources_pb2.Mailbox:
    """Renew once (refused): the mailbox's state, after checking it is final and said once."""
    sim = service.sim
    advance(service, clock, 36 * 3600)
    await claims_one(service.app.renew_worker)  # a claim skips a row another transaction holds at that moment
    refused = await get(service, auth, mailbox.id)
    assert refused.state == resources_pb2.MAILBOX_STATE_ACCESS_REFUSED
    assert not refused.HasField("next_attempt_time")
    # No retry loop: days later nothing is claimed and Gmail hears nothing more.
    calls = dict(sim.counters()["calls"][email])
    advance(service, clock, 3 * DAY)
    assert await service.app.renew_worker.run_once() == 0
    assert await service.app.sync_worker.run_once() == 0
    assert dict(sim.counters()["calls"][email]) == calls
    await service.mailboxes.SendTestEvent(mailbox_service_pb2.SendTestEventRequest(), metadata=auth)
    events = await collect(service, auth, lambda ev: "TEST" in types(ev))
    assert types(events).count("ACCESS_REFUSED") == 1
    [event] = [e for e in events if types([e]) == ["ACCESS_REFUSED"]]
    assert event.attributes["reason"] == refused.last_error.reason
    assert event.attributes["message"] == refused.last_error.message
    return refused


async def test_renewal_refused_for_the_topic_is_final(make_service):
    clock = OffsetClock()
    async with make_service(clock=clock, sync_enabled=False, poll_enabled=False, renew_enabled=False) as service:
        auth, mailbox = await register_sa_mailbox(service, "publisher@example.com")
        # Someone removes Gmail's publisher role from the topic.
        service.sim.set_gmail_publisher(service.topic, granted=False)
        refused = await _renewal_refused(service, clock, auth, mailbox, "publisher@example.com")
        assert refused.last_error.reason == "GMAIL_TOPIC_NOT_PUBLISHABLE"
        assert NOT_AUTHORIZED in refused.last_error.message

        # Granted again and registered again, the mailbox is watched.
        service.sim.set_gmail_publisher(service.topic, granted=True)
        revived = await service.mailboxes.RegisterMailbox(sa_request(service.sim, "publisher@example.com"),
                                                          metadata=auth)
        assert revived.id == mailbox.id and revived.state == resources_pb2.MAILBOX_STATE_ACTIVE


async def test_renewal_refused_for_a_deleted_label_is_final(make_service):
    clock = OffsetClock()
    async with make_service(clock=clock, sync_enabled=False, poll_enabled=False, renew_enabled=False) as service:
        sim = service.sim
        email = "labels@example.com"
        sim.create_mailbox(email)
        label = sim.create_label(email, "Invoices")
        auth, mailbox = await register_sa_mailbox(service, email, label_ids=[label])
        sim.delete_label(email, label)  # the user deletes the label the watch filters on
        refused = await _renewal_refused(service, clock, auth, mailbox, email)
        assert refused.last_error.reason == "GMAIL_LABEL_REJECTED"
        assert f"Invalid label: {label}" in refused.last_error.message

        # A registration naming the missing label is told which field is wrong.
        with pytest.raises(grpc.aio.AioRpcError) as rejected:
            await service.mailboxes.RegisterMailbox(sa_request(sim, email, label_ids=[label]), metadata=auth)
        assert rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info, bad_request = error_details(rejected.value)
        assert info.reason == "GMAIL_LABEL_REJECTED" and bad_request.field_violations[0].field == "label_ids"
