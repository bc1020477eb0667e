"""Keeping watches alive, the whole service against the Gmail simulator.

Days pass in seconds: the test moves the simulator's clock (watch expiry,
history retention, token lifetime) and the service's `OffsetClock` (renewal
and poll due times) together.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import generate_latest

from mailwatch.clock import OffsetClock
from mailwatch.gmail import quota
from mailwatch_devstack.gmail_sim.auth import project_number
from mailwatch.v1 import resources_pb2
from tests.fixtures.pipeline import (
    DAY, advance, claims_one, collect, eventually, get_mailbox as get, message_events, register_sa_mailbox,
    timestamp as ts, types,
)
from tests.fixtures.names import TEST_PROJECT
from tests.fixtures.rpc import oauth_request, sa_request

pytestmark = pytest.mark.integration

def watch_calls(sim, email) -> int:
    return sim.counters()["calls"].get(email, {}).get("users.watch", 0)


async def test_renewals_are_spread_over_the_next_day_then_daily(make_service):
    clock = OffsetClock()
    async with make_service(clock=clock, renew_loop_seconds=0.2) as service:
        _, auth = await service.new_tenant()
        emails = [f"herd{n}@example.com" for n in range(8)]
        registered = [await service.mailboxes.RegisterMailbox(sa_request(service.sim, e), metadata=auth) for e in emails]
        now = clock.now()
        first = {m.email_address: ts(m.next_renew_time) for m in registered}
        assert all(now + timedelta(hours=11.9) <= due <= now + timedelta(hours=36) for due in first.values())
        assert len(set(first.values())) == len(first)
        assert all(ts(m.watch_expire_time) - now > timedelta(days=6, hours=23) for m in registered)

        # On time: the earliest mailbox renews at its slot, and is next due exactly a day later.
        earliest = min(registered, key=lambda m: first[m.email_address])
        advance(service, clock, (first[earliest.email_address] - clock.now()).total_seconds() + 1)
        await eventually(lambda: watch_calls(service.sim, earliest.email_address) == 2)

        async def renewed() -> bool:
            got = await get(service, auth, earliest.id)
            return ts(got.next_renew_time) > first[earliest.email_address] + timedelta(hours=1)

        await eventually(renewed)
        after = await get(service, auth, earliest.id)
        assert ts(after.next_renew_time) - first[earliest.email_address] == timedelta(days=1)

        # Late (the clocks jump 36 hours): every mailbox renews once and keeps its slot.
        advance(service, clock, 36 * 3600)
        events = await collect(service, auth, lambda ev: {e.email_address for e in ev
                                                          if e.type == resources_pb2.EVENT_TYPE_WATCH_RENEWED}
                               == set(emails))
        assert types(events).count("WATCH_RENEWED") <= len(emails) + 1
        sim_now = datetime.fromtimestamp(service.sim.now(), tz=timezone.utc)
        for before in registered:
            after = await get(service, auth, before.id)
            assert after.state == resources_pb2.MAILBOX_STATE_ACTIVE
            moved = ts(after.next_renew_time) - first[before.email_address]
            assert moved % timedelta(days=1) == timedelta(0) and moved >= timedelta(days=1)
            assert ts(after.next_renew_time) >= clock.now() + timedelta(hours=11.9)
            assert abs(ts(after.watch_expire_time) - (sim_now + timedelta(days=7))) < timedelta(minutes=1)
            assert not after.last_error.reason


async def test_an_expired_watch_is_reported_polled_meanwhile_and_renewed_later(make_service):
    clock = OffsetClock()
    async with make_service(clock=clock, renew_loop_seconds=0.2, poll_interval_seconds=1.0) as service:
        sim = service.sim
        sim.configure(history_retention_seconds=None)  # this test is about the watch, not history expiry
        _, auth = await service.new_tenant()
        mailbox = await service.mailboxes.RegisterMailbox(sa_request(sim, "lapsed@example.com"), metadata=auth)
        sim.inject_fault("backendError", method="users.watch", user="lapsed@example.com")

        advance(service, clock, 8 * DAY)  # renewals fail all along; the watch lapses
        events = await collect(service, auth, lambda ev: "WATCH_EXPIRED" in types(ev))
        expired = [e for e in events if e.type == resources_pb2.EVENT_TYPE_WATCH_EXPIRED][0]
        assert expired.attributes["reason"] == "GMAIL_UNAVAILABLE"
        failing = await get(service, auth, mailbox.id)
        assert failing.state == resources_pb2.MAILBOX_STATE_ACTIVE
        assert failing.last_error.reason == "GMAIL_UNAVAILABLE"
        assert ts(failing.watch_expire_time) < clock.now()

        # No watch, no notifications: the fallback poll still brings changes in.
        message = sim.insert_message("lapsed@example.com", label_ids=["INBOX"])
        events = await collect(service, auth, lambda ev: message["id"] in [e.message_id for e in ev])
        assert types(events).count("WATCH_EXPIRED") == 1

        sim.clear_faults()
        advance(service, clock, 3600)  # past the renewal's backoff (at most an hour)
        events = await collect(service, auth, lambda ev: "WATCH_RENEWED" in types(ev))
        assert types(events).count("WATCH_EXPIRED") == 1
        assert types(events).index("WATCH_EXPIRED") < types(events).index("WATCH_RENEWED")
        renewed = await get(service, auth, mailbox.id)
        assert renewed.state == resources_pb2.MAILBOX_STATE_ACTIVE and not renewed.last_error.reason
        assert ts(renewed.watch_expire_time) > clock.now() + timedelta(days=6)

        # Notifications flow again.
        advance(service, clock, 2)
        fresh = sim.insert_message("lapsed@example.com", label_ids=["INBOX"])
        await eventually(lambda: any(n["status"] in ("published", "queued") and n["historyId"] == fresh["historyId"]
                                     for n in sim.notifications("lapsed@example.com")))


async def test_renewal_with_revoked_credentials_marks_auth_failed_and_stops_calling(make_service):
    clock = OffsetClock()
    async with make_service(clock=clock, sync_enabled=False, poll_enabled=False, renew_enabled=False) as service:
        sim = service.sim
        _, auth = await service.new_tenant()
        request, _, _ = oauth_request(sim, "gone@example.com")
        mailbox = await service.mailboxes.RegisterMailbox(request, metadata=auth)
        sim.revoke_user("gone@example.com")

        advance(service, clock, 36 * 3600)
        await claims_one(service.app.renew_worker)
        failed = await get(service, auth, mailbox.id)
        assert failed.state == resources_pb2.MAILBOX_STATE_AUTH_FAILED
        assert failed.last_error.reason == "GMAIL_AUTH_FAILED"
        events = await collect(service, auth, lambda ev: "AUTH_FAILED" in types(ev))
        assert types(events).count("AUTH_FAILED") == 1

        calls = sim.counters()["calls"]["gone@example.com"]
        advance(service, clock, 3 * DAY)
        assert await service.app.renew_worker.run_once() == 0
        assert sim.counters()["calls"]["gone@example.com"] == calls

        sim.restore_user("gone@example.com")
        request, _, _ = oauth_request(sim, "gone@example.com")
        revived = await service.mailboxes.RegisterMailbox(request, metadata=auth)
        assert revived.state == resources_pb2.MAILBOX_STATE_ACTIVE
        assert ts(revived.next_renew_time) > clock.now() + timedelta(hours=11)


async def test_rate_limited_renewal_backs_off_for_retry_after(make_service):
    clock = OffsetClock()
    async with make_service(clock=clock, sync_enabled=False, poll_enabled=False, renew_enabled=False) as service:
        sim = service.sim
        auth, mailbox = await register_sa_mailbox(service, "slow@example.com")
        sim.inject_fault("rateLimitExceeded", method="users.watch", count=1, retry_after=900)
        advance(service, clock, 36 * 3600)
        await claims_one(service.app.renew_worker)
        waiting = await get(service, auth, mailbox.id)
        assert waiting.last_error.reason == "GMAIL_RATE_LIMITED"
        assert ts(waiting.next_renew_time) - clock.now() > timedelta(seconds=890)
        assert await service.app.renew_worker.run_once() == 0
        advance(service, clock, 901)
        await claims_one(service.app.renew_worker)
        assert not (await get(service, auth, mailbox.id)).last_error.reason


async def test_quota_units_are_counted_per_tenant_as_gmail_counts_them(make_service):
    clock = OffsetClock()
    async with make_service(clock=clock, renew_enabled=False) as service:
        sim = service.sim
        tenant_id, auth = await service.new_tenant()
        await service.mailboxes.RegisterMailbox(sa_request(sim, "metered@example.com"), metadata=auth)
        message = sim.insert_message("metered@example.com", label_ids=["INBOX"])
        await collect(service, auth, lambda ev: message["id"] in [e.message_id for e in ev])
        advance(service, clock, 36 * 3600)
        await claims_one(service.app.renew_worker)

        sim_units = sim.counters()["quotaUnits"]["metered@example.com"]
        assert quota.units_spent(tenant_id, "watch") == 200
        assert quota.units_spent(tenant_id) == sim_units
        exposed = generate_latest().decode()
        series = f'mailwatch_gmail_quota_units_total{{method="watch",project="{TEST_PROJECT}",tenant="{tenant_id}"}}'
        assert f"{series} 200.0" in exposed
        assert "metered@example.com" not in exposed


async def test_quota_units_are_counted_per_google_project_of_the_credentials(make_service):
    """Gmail charges a call to the project of the credentials making it: a key's project id, an
    OAuth client's project (named by number, as the client id does)."""
    async with make_service(renew_enabled=False) as service:
        sim = service.sim
        tenant_id, auth = await service.new_tenant()
        await service.mailboxes.RegisterMailbox(sa_request(sim, "keyed@example.com"), metadata=auth)
        request, client, _ = oauth_request(sim, "granted@example.com")
        await service.mailboxes.RegisterMailbox(request, metadata=auth)
        messages = [sim.insert_message(email, label_ids=["INBOX"])
                    for email in ("keyed@example.com", "granted@example.com")]
        await collect(service, auth, lambda ev: {m["id"] for m in messages} <= {e.message_id for e in ev})

        number = str(project_number(TEST_PROJECT))
        assert client["clientId"].startswith(f"{number}-")

        def by_project() -> dict[str, float]:
            return {project: quota.units_spent(tenant_id, project=project) for project in (TEST_PROJECT, number)}

        def by_user() -> dict[str, float]:
            units = sim.counters()["quotaUnits"]
            return {TEST_PROJECT: units["keyed@example.com"], number: units["granted@example.com"]}

        # Every call is counted as it is sent; Gmail counts it as it arrives.
        await eventually(lambda: by_project() == by_user())
        assert all(units >= 101 for units in by_project().values())  # at least a getProfile and a watch each
        assert quota.units_spent(tenant_id) == sum(by_project().values())
        assert quota.units_spent(tenant_id, "watch", project=number) == 100
        exposed = generate_latest().decode()
        for project in (TEST_PROJECT, number):
            series = f'mailwatch_gmail_quota_units_total{{method="watch",project="{project}",tenant="{tenant_id}"}}'
            assert f"{series} 100.0" in exposed


async def test_with_every_notification_dropped_changes_arrive_within_the_poll_interval(make_service):
    interval = 2.0
    async with make_service(poll_interval_seconds=interval) as service:
        sim = service.sim
        _, auth = await service.new_tenant()
        emails = [f"dropped{n}@example.com" for n in range(4)]
        for email in emails:
            await service.mailboxes.RegisterMailbox(sa_request(sim, email), metadata=auth)
        sim.set_notification_faults(drop_fraction=1.0)
        inserted_at = {}
        for round_ in range(2):
            for email in emails:
                message = sim.insert_message(email, label_ids=["INBOX"])
                inserted_at[message["id"]] = time.monotonic()

        arrived: dict[str, float] = {}

        def note(events) -> bool:
            for kind, message_id, _ in message_events(events):
                arrived.setdefault(message_id, time.monotonic())
            return set(inserted_at) <= set(arrived)

        events = await collect(service, auth, note, timeout=20)
        assert sorted(m for _, m, _ in message_events(events)) == sorted(inserted_at)
        latencies = [arrived[m] - inserted_at[m] for m in inserted_at]
        # Within the interval, plus one poll tick (interval / 10) and the sync itself.
        assert max(latencies) < interval + interval / 10 + 1.5, latencies
        # Only the watches' own notifications went out.
        assert all(n["status"] != "published" for e in emails for n in sim.notifications(e)[1:])
