"""Registrations of one address in one Google project share one Gmail watch (Gmail allows one
push client per user and project): union filter, own events, renewal once, stop only when no
one needs it, and stop + watch when the project's watch has another topic — against the
simulator, the Pub/Sub emulator and real Postgres, with the fallback poll off."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from mailwatch.clock import OffsetClock
from mailwatch.v1 import mailbox_service_pb2
from tests.fixtures.names import TEST_PROJECT
from tests.fixtures.pipeline import claims_one, collect, message_events
from tests.fixtures.rpc import sa_request, tenant_topic

pytestmark = pytest.mark.integration

ALICE = "shared@example.com"


def calls(sim, method: str, email: str = ALICE) -> int:
    return sim.counters()["calls"].get(email, {}).get(method, 0)


def messages_seen(events) -> list[str]:
    return [message_id for kind, message_id, _ in message_events(events) if kind == "EVENT_TYPE_MESSAGE_ADDED"]


def insert(sim, labels) -> str:
    sim.advance_clock(2)  # past Gmail's one notification per second
    return sim.insert_message(ALICE, label_ids=labels)["id"]


async def test_two_tenants_with_different_filters_share_one_watch_and_one_outlives_the_others_stop(make_service):
    async with make_service(poll_enabled=False) as service:
        sim = service.sim
        _, inbox_tenant = await service.new_tenant()
        _, starred_tenant = await service.new_tenant()
        first = await service.mailboxes.RegisterMailbox(sa_request(sim, ALICE, label_ids=["INBOX"]),
                                                        metadata=inbox_tenant)
        await service.mailboxes.RegisterMailbox(sa_request(sim, ALICE, label_ids=["STARRED"]), metadata=starred_tenant)
        # The first tenant cannot tell that another registered the address: its watch fields are untouched.
        again = await service.mailboxes.GetMailbox(mailbox_service_pb2.GetMailboxRequest(mailbox_id=first.id),
                                                   metadata=inbox_tenant)
        assert (again.watch_expire_time, again.next_renew_time, again.label_filter) == (
            first.watch_expire_time, first.next_renew_time, first.label_filter)
        watches = sim.mailbox(ALICE)["watches"]
        assert [(w["projectId"], w["labelIds"], w["labelFilterBehavior"]) for w in watches] == [
            (TEST_PROJECT, ["INBOX", "STARRED"], "INCLUDE")]

        in_inbox, starred, both = insert(sim, ["INBOX"]), insert(sim, ["STARRED"]), insert(sim, ["INBOX", "STARRED"])
        inbox_events = await collect(service, inbox_tenant, lambda ev: both in messages_seen(ev))
        starred_events = await collect(service, starred_tenant, lambda ev: both in messages_seen(ev))
        assert messages_seen(inbox_events) == [in_inbox, both]
        assert messages_seen(starred_events) == [starred, both]

        await service.mailboxes.StopMailbox(mailbox_service_pb2.StopMailboxRequest(mailbox_id=first.id),
                                            metadata=inbox_tenant)
        assert calls(sim, "users.stop") == 0  # the other tenant still needs the watch
        later = insert(sim, ["STARRED"])
        starred_events = await collect(service, starred_tenant, lambda ev: later in messages_seen(ev))
        assert messages_seen(starred_events)[-1] == later  # by notification: the poll is off


async def test_the_last_registration_to_stop_stops_the_watch(service):
    _, first = await service.new_tenant()
    _, second = await service.new_tenant()
    one = await service.mailboxes.RegisterMailbox(sa_request(service.sim, ALICE), metadata=first)
    two = await service.mailboxes.RegisterMailbox(sa_request(service.sim, ALICE, label_ids=["INBOX"]), metadata=second)
    assert service.sim.mailbox(ALICE)["watch"]["labelIds"] == []  # one wants everything
    await service.mailboxes.StopMailbox(mailbox_service_pb2.StopMailboxRequest(mailbox_id=one.id), metadata=first)
    assert calls(service.sim, "users.stop") == 0
    await service.mailboxes.StopMailbox(mailbox_service_pb2.StopMailboxRequest(mailbox_id=two.id), metadata=second)
    assert calls(service.sim, "users.stop") == 1 and service.sim.mailbox(ALICE)["watches"] == []


async def test_a_shared_watch_is_renewed_once(make_service):
    clock = OffsetClock()
    # Nothing else may hold the mailbox rows when the renewal claims them (FOR UPDATE SKIP
    # LOCKED skips a row a sync or the fallback poll holds): both must land in one batch.
    async with make_service(clock=clock, renew_enabled=False, sync_enabled=False, poll_enabled=False,
                            ingest_enabled=False) as service:
        _, first = await service.new_tenant()
        _, second = await service.new_tenant()
        one = await service.mailboxes.RegisterMailbox(sa_request(service.sim, ALICE, label_ids=["INBOX"]),
                                                      metadata=first)
        registered = await service.mailboxes.RegisterMailbox(sa_request(service.sim, ALICE, label_ids=["SENT"]),
                                                             metadata=second)
        registrations = [(one, first), (registered, second)]
        before = calls(service.sim, "users.watch")
        service.sim.advance_clock(2 * 24 * 3600)
        clock.advance(timedelta(days=2))
        assert await service.app.renew_worker.run_once() == 2  # both due, one Gmail call
        assert calls(service.sim, "users.watch") == before + 1
        assert service.sim.mailbox(ALICE)["watch"]["labelIds"] == ["INBOX", "SENT"]
        # The one left out of the batch is due again after the lease, and finds the watch fresh.
        service.sim.advance_clock(120)
        clock.advance(timedelta(seconds=120))
        await claims_one(service.app.renew_worker)
        assert calls(service.sim, "users.watch") == before + 1
        renewed = [await service.mailboxes.GetMailbox(mailbox_service_pb2.GetMailboxRequest(mailbox_id=m.id),
                                                      metadata=auth) for m, auth in registrations]
        assert all(m.watch_expire_time.seconds > registered.watch_expire_time.seconds for m in renewed)
        assert await service.app.renew_worker.run_once() == 0  # nobody is due again


async def test_a_registration_the_shared_watch_already_covers_makes_no_watch_call(make_service):
    async with make_service(poll_enabled=False) as service:
        sim = service.sim
        _, everything = await service.new_tenant()
        _, inbox_only = await service.new_tenant()
        _, also_everything = await service.new_tenant()
        await service.mailboxes.RegisterMailbox(sa_request(sim, ALICE), metadata=everything)
        watched = sim.mailbox(ALICE)["watch"]
        assert calls(sim, "users.watch") == 1
        # The project's watch reports everything: an INBOX-only or another unfiltered registration
        # of the address (another tenant, same project) adds nothing to it; no second call.
        narrow = await service.mailboxes.RegisterMailbox(sa_request(sim, ALICE, label_ids=["INBOX"]),
                                                         metadata=inbox_only)
        wide = await service.mailboxes.RegisterMailbox(sa_request(sim, ALICE), metadata=also_everything)
        assert calls(sim, "users.watch") == 1 and sim.mailbox(ALICE)["watch"] == watched
        assert narrow.watch_expire_time.ToMilliseconds() == wide.watch_expire_time.ToMilliseconds() == int(
            watched["expiration"])
        # Each still gets what it registered for, by the shared watch's notifications.
        in_inbox, archived = insert(sim, ["INBOX"]), insert(sim, ["CATEGORY_UPDATES"])
        narrow_events = await collect(service, inbox_only, lambda ev: in_inbox in messages_seen(ev))
        wide_events = await collect(service, also_everything, lambda ev: archived in messages_seen(ev))
        assert messages_seen(narrow_events) == [in_inbox]
        assert messages_seen(wide_events) == [in_inbox, archived]


async def test_a_registration_the_shared_watch_does_not_cover_widens_it(make_service):
    async with make_service(poll_enabled=False) as service:
        sim = service.sim
        _, inbox_tenant = await service.new_tenant()
        _, sent_tenant = await service.new_tenant()
        await service.mailboxes.RegisterMailbox(sa_request(sim, ALICE, label_ids=["INBOX"]), metadata=inbox_tenant)
        await service.mailboxes.RegisterMailbox(sa_request(sim, ALICE, label_ids=["INBOX"]), metadata=sent_tenant)
        assert calls(sim, "users.watch") == 1  # the same filter: covered
        await service.mailboxes.RegisterMailbox(sa_request(sim, ALICE, label_ids=["SENT"]), metadata=sent_tenant)
        assert calls(sim, "users.watch") == 2  # SENT is not reported yet: the watch is widened
        assert sim.mailbox(ALICE)["watch"]["labelIds"] == ["INBOX", "SENT"]


def _takeovers() -> float:
    return REGISTRY.get_sample_value("mailwatch_watch_takeovers_total") or 0.0


async def test_a_changed_topic_recovers_through_stop_then_watch(make_service):
    moved = tenant_topic(TEST_PROJECT)
    request = None
    async with make_service() as service:
        _, auth = await service.new_tenant("mover")
        request = sa_request(service.sim, ALICE)
        await service.mailboxes.RegisterMailbox(request, metadata=auth)
        assert service.sim.mailbox(ALICE)["watch"]["topicName"] == service.topic
    taken_over = _takeovers()
    # The operator moves the deployment to another topic of the same project.
    async with make_service(pubsub_topic=moved["topic"], pubsub_subscriptions=(moved["subscription"],),
                            poll_enabled=False) as service:
        mailbox = await service.mailboxes.RegisterMailbox(request, metadata=auth)
        assert mailbox.watch_topic == moved["topic"]
        assert service.sim.mailbox(ALICE)["watch"]["topicName"] == moved["topic"]
        assert calls(service.sim, "users.stop") == 1 and _takeovers() == taken_over + 1
        later = insert(service.sim, ["INBOX"])
        events = await collect(service, auth, lambda ev: later in messages_seen(ev))
        assert later in messages_seen(events)
