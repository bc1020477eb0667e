"""Surviving Gmail's limits and refusals, the whole service against the simulator.

Rate limits name their retry time in the message and lock the user out until
then; the token endpoint's clock-skew invalid_grant is transient; permanent
refusals end in ACCESS_REFUSED; OAuth refreshes keep the granted scopes.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
from prometheus_client import REGISTRY

from mailwatch.clock import OffsetClock
from mailwatch.config import GmailSettings
from mailwatch.domain.models import LabelFilter, ServiceAccountCredential
from mailwatch.gmail.client import GmailClient
from mailwatch.v1 import mailbox_service_pb2, resources_pb2
from tests.fixtures.pipeline import (
    DAY, advance, claims_one, collect, eventually, get_mailbox as get, message_events, register_sa_mailbox,
    timestamp as ts, types,
)
from tests.fixtures.rpc import sa_request

pytestmark = pytest.mark.integration

def calls(sim, email: str) -> dict:
    return dict(sim.counters()["calls"].get(email, {}))


async def due_after_a_notification(service, email: str) -> None:
    """Let the simulator's notification for a change mark the mailbox due."""
    marked = service.app.ingestor.stats.marked_due
    service.sim.insert_message(email, label_ids=["INBOX"])
    await eventually(lambda: service.app.ingestor.stats.marked_due > marked)


async def test_gmails_retry_time_holds_back_every_gmail_call_for_the_user(make_service):
    clock = OffsetClock()
    async with make_service(clock=clock, sync_enabled=False, poll_enabled=False, renew_enabled=False) as service:
        sim = service.sim
        auth, mailbox = await register_sa_mailbox(service, "locked@example.com")
        advance(service, clock, 2)  # past the watch notification's one-per-second window
        sim.inject_fault("userRateLimitExceeded", method="users.history.list", count=1, retry_after=2 * DAY)
        await due_after_a_notification(service, "locked@example.com")
        await claims_one(service.app.sync_worker)

        # GetMailbox says why and when: at Gmail's retry time, not at our own backoff's.
        limited = await get(service, auth, mailbox.id)
        assert limited.state == resources_pb2.MAILBOX_STATE_ACTIVE
        assert limited.last_error.reason == "GMAIL_RATE_LIMITED"
        assert "Retry after" in limited.last_error.message
        lockout_end = sim.faults()["lockouts"]["locked@example.com"]["until"]
        assert abs(ts(limited.next_attempt_time).timestamp() - lockout_end) < 0.01

        # A day and a half later a sync (notification) and the watch renewal are both due,
        # yet neither calls Gmail before its retry time.
        advance(service, clock, 1.5 * DAY)
        await due_after_a_notification(service, "locked@example.com")
        assert ts((await get(service, auth, mailbox.id)).next_renew_time) < clock.now()
        before = calls(sim, "locked@example.com")
        assert await service.app.sync_worker.run_once() == 0
        assert await service.app.renew_worker.run_once() == 0
        assert calls(sim, "locked@example.com") == before

        advance(service, clock, 0.5 * DAY + 1)
        await claims_one(service.app.sync_worker)
        await claims_one(service.app.renew_worker)
        events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 2)
        assert len(message_events(events)) == 2
        recovered = await get(service, auth, mailbox.id)
        assert not recovered.last_error.reason and not recovered.HasField("next_attempt_time")


async def registered_then_refused_tokens(service, email: str, refusal: str):
    """A registered service-account mailbox, due for a sync, whose next token grant gets `refusal`."""
    service.sim.configure(token_lifetime_seconds=1)  # every call needs a fresh token
    auth, mailbox = await register_sa_mailbox(service, email)
    service.sim.advance_clock(2)  # past the watch notification's one-per-second window
    service.sim.refuse_user(email, refusal)
    await due_after_a_notification(service, email)
    return auth, mailbox


def clock_skew_count() -> float:
    return REGISTRY.get_sample_value("mailwatch_gmail_clock_skew_total") or 0.0


async def test_clock_skew_is_retried_never_auth_failed(make_service, caplog):
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        auth, mailbox = await registered_then_refused_tokens(service, "skewed@example.com", "clockSkew")
        skews = clock_skew_count()
        with caplog.at_level("ERROR", logger="mailwatch.gmail.errors"):
            await claims_one(service.app.sync_worker)

        skewed = await get(service, auth, mailbox.id)
        assert skewed.state == resources_pb2.MAILBOX_STATE_ACTIVE
        assert skewed.last_error.reason == "GMAIL_CLOCK_SKEW"
        assert skewed.HasField("next_attempt_time")
        assert clock_skew_count() == skews + 1
        assert "host clock" in caplog.text

        # The clock is fixed: the retry goes through and nothing was lost.
        sim.lift_refusal("skewed@example.com")
        await eventually(lambda: datetime.now(timezone.utc) >= ts(skewed.next_attempt_time), timeout=30)
        await claims_one(service.app.sync_worker)
        events = await collect(service, auth, lambda ev: len(message_events(ev)) >= 1)
        assert "AUTH_FAILED" not in types(events)
        assert (await get(service, auth, mailbox.id)).state == resources_pb2.MAILBOX_STATE_ACTIVE


@pytest.mark.parametrize("kind, gmail_reason", [
    ("delegationDenied", "forbidden"),
    ("domainPolicy", "domainPolicy"),
    ("insufficientPermissions", "insufficientPermissions"),
    ("mailServiceNotEnabled", "failedPrecondition"),
])
async def test_permanent_refusals_end_in_access_refused_until_registered_again(make_service, kind, gmail_reason):
    async with make_service(poll_interval_seconds=1.0) as service:
        sim = service.sim
        _, auth = await service.new_tenant()
        request = sa_request(sim, "refused@example.com")
        mailbox = await service.mailboxes.RegisterMailbox(request, metadata=auth)
        sim.refuse_user("refused@example.com", kind)
        missed = sim.insert_message("refused@example.com", label_ids=["INBOX"])

        events = await collect(service, auth, lambda ev: "ACCESS_REFUSED" in types(ev))
        refused_event = events[types(events).index("ACCESS_REFUSED")]
        assert refused_event.attributes["gmail_reason"] == gmail_reason
        assert refused_event.attributes["reason"] == "GMAIL_ACCESS_REFUSED"
        refused = await get(service, auth, mailbox.id)
        assert refused.state == resources_pb2.MAILBOX_STATE_ACCESS_REFUSED
        assert refused.last_error.reason == "GMAIL_ACCESS_REFUSED" and not refused.HasField("next_attempt_time")
        listed = await service.mailboxes.ListMailboxes(
            mailbox_service_pb2.ListMailboxesRequest(states=[resources_pb2.MAILBOX_STATE_ACCESS_REFUSED]),
            metadata=auth)
        assert [m.id for m in listed.mailboxes] == [mailbox.id]

        # No more Gmail calls for it: not by polls, not by syncs.
        before = calls(sim, "refused@example.com")
        sim.insert_message("refused@example.com", label_ids=["INBOX"])
        await service.app.poll_worker.run_once()
        await service.app.sync_worker.run_once()
        assert calls(sim, "refused@example.com") == before

        # Fixed on the Google side, registered again: it catches up from the stored history id.
        sim.lift_refusal("refused@example.com")
        revived = await service.mailboxes.RegisterMailbox(request, metadata=auth)
        assert revived.id == mailbox.id and revived.state == resources_pb2.MAILBOX_STATE_ACTIVE
        assert not revived.last_error.reason
        events = await collect(service, auth, lambda ev: missed["id"] in [e.message_id for e in ev])
        assert types(events).count("ACCESS_REFUSED") == 1


async def test_unauthorized_client_is_auth_failed(make_service):
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        auth, mailbox = await registered_then_refused_tokens(service, "undelegated@example.com", "unauthorizedClient")
        await claims_one(service.app.sync_worker)
        failed = await get(service, auth, mailbox.id)
        assert failed.state == resources_pb2.MAILBOX_STATE_AUTH_FAILED
        assert failed.last_error.reason == "GMAIL_AUTH_FAILED" and "unauthorized_client" in failed.last_error.message


@pytest.mark.parametrize("granted", [
    ["https://www.googleapis.com/auth/gmail.modify"],
    ["https://mail.google.com/"],
])
async def test_oauth_refresh_keeps_the_scopes_the_user_granted(make_service, granted):
    async with make_service() as service:
        sim = service.sim
        _, auth = await service.new_tenant()
        sim.create_mailbox("granted@example.com")
        client = sim.create_oauth_client()
        refresh_token = sim.issue_refresh_token(client["clientId"], "granted@example.com", scopes=granted)
        request = mailbox_service_pb2.RegisterMailboxRequest(
            email_address="granted@example.com",
            oauth=mailbox_service_pb2.OAuthCredentials(
                client_id=client["clientId"], client_secret=client["clientSecret"], refresh_token=refresh_token),
        )
        mailbox = await service.mailboxes.RegisterMailbox(request, metadata=auth)
        assert mailbox.state == resources_pb2.MAILBOX_STATE_ACTIVE
        message = sim.insert_message("granted@example.com", label_ids=["INBOX"])
        await collect(service, auth, lambda ev: message["id"] in [e.message_id for e in ev])


async def test_watch_label_filter_behavior_in_the_discovery_spelling(service):
    _, auth = await service.new_tenant()
    request = sa_request(service.sim, "filtered@example.com", label_ids=["SPAM"],
                         label_filter_behavior=resources_pb2.LABEL_FILTER_BEHAVIOR_EXCLUDE)
    mailbox = await service.mailboxes.RegisterMailbox(request, metadata=auth)
    assert mailbox.state == resources_pb2.MAILBOX_STATE_ACTIVE
    watch = service.sim.mailbox("filtered@example.com")["watch"]
    assert watch["labelIds"] == ["SPAM"] and watch["labelFilterBehavior"] == "EXCLUDE"


async def test_at_most_n_gmail_calls_in_flight_per_user(gmail_sim, pubsub_topic):
    """Twelve watches for one user at once (each holds the simulator while it checks the topic on the
    Pub/Sub emulator): with GMAIL_CALLS_PER_USER=2 Gmail never sees more than 2, so a cap of 2 refuses none."""
    sim = gmail_sim
    email = "crowded@example.com"
    sim.create_mailbox(email)
    sim.configure(concurrent_requests_per_user=2)
    key = sim.create_service_account_key(project_id=pubsub_topic["project"])
    gmail = GmailClient(GmailSettings(api_endpoint=sim.url, token_uri=sim.token_uri, calls_per_user=2))
    try:
        credential = ServiceAccountCredential(info=key, subject=email)
        results = await asyncio.gather(*(
            gmail.watch(credential, email, topic=pubsub_topic["topic"], label_filter=LabelFilter())
            for _ in range(12)
        ))
    finally:
        gmail.close()
    assert len(results) == 12 and all(r.history_id for r in results)
    assert sim.counters()["calls"][email]["users.watch"] == 12
    assert 1 <= sim.counters()["peakConcurrentRequests"][email] <= 2
