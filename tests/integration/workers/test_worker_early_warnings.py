"""WATCH_EXPIRING and NOTIFICATIONS_MISSED: each once per episode, end to end.

Days pass in seconds: the simulator's clock and the service's OffsetClock move together.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from mailwatch.clock import OffsetClock
from sqlalchemy import text

from mailwatch.v1 import mailbox_service_pb2, resources_pb2
from tests.fixtures.pipeline import collect, eventually, types
from tests.fixtures.rpc import sa_request

pytestmark = pytest.mark.integration

DAY = 24 * 3600


def advance(service, clock: OffsetClock, seconds: float) -> None:
    service.sim.advance_clock(seconds)
    clock.advance(timedelta(seconds=seconds))


async def test_watch_expiring_is_sent_once_per_episode_before_watch_expired(make_service):
    clock = OffsetClock()
    async with make_service(clock=clock, renew_loop_seconds=0.2, poll_enabled=False) as service:
        sim = service.sim
        sim.configure(history_retention_seconds=None)
        _, auth = await service.new_tenant()
        mailbox = await service.mailboxes.RegisterMailbox(sa_request(sim, "fading@example.com"), metadata=auth)
        sim.inject_fault("backendError", method="users.watch", user="fading@example.com")

        # Four days in, renewal has been failing but expiry is still > 48 h away: no warning yet.
        advance(service, clock, 4 * DAY)

        async def renewal_failed():
            current = await service.mailboxes.GetMailbox(
                mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox.id), metadata=auth
            )
            return current.last_error.reason == "GMAIL_UNAVAILABLE"

        await eventually(renewal_failed)  # a warning would commit with the failure it reports
        events = await collect(service, auth, lambda ev: "WATCH_STARTED" in types(ev))
        assert "WATCH_EXPIRING" not in types(events)

        # Within 48 h of expiry: one warning, however many renewals keep failing.
        advance(service, clock, 1.5 * DAY)
        events = await collect(service, auth, lambda ev: "WATCH_EXPIRING" in types(ev))
        [warning] = [e for e in events if e.type == resources_pb2.EVENT_TYPE_WATCH_EXPIRING]
        assert warning.attributes["reason"] == "GMAIL_UNAVAILABLE"
        assert int(warning.attributes["failed_attempts"]) >= 1
        for _ in range(3):
            advance(service, clock, 3 * 3600)
        advance(service, clock, 2 * DAY)  # past expiry
        events = await collect(service, auth, lambda ev: "WATCH_EXPIRED" in types(ev))
        assert types(events).count("WATCH_EXPIRING") == 1
        assert types(events).index("WATCH_EXPIRING") < types(events).index("WATCH_EXPIRED")

        # Renewed, then failing again towards the new expiry: a new episode, a new warning.
        sim.clear_faults()
        advance(service, clock, 3600)
        events = await collect(service, auth, lambda ev: "WATCH_RENEWED" in types(ev))
        sim.inject_fault("backendError", method="users.watch", user="fading@example.com")
        advance(service, clock, 5.5 * DAY)
        events = await collect(service, auth, lambda ev: types(ev).count("WATCH_EXPIRING") == 2)
        assert types(events).count("WATCH_EXPIRING") == 2


async def test_notifications_missed_once_per_episode_and_a_notification_ends_it(make_service):
    async with make_service(poll_interval_seconds=1.0) as service:
        sim = service.sim
        _, auth = await service.new_tenant()
        await service.mailboxes.RegisterMailbox(sa_request(sim, "quiet@example.com"), metadata=auth)
        sim.advance_clock(2)
        sim.set_notification_faults(drop_fraction=1.0)

        first = sim.insert_message("quiet@example.com", label_ids=["INBOX"])
        events = await collect(service, auth, lambda ev: first["id"] in [e.message_id for e in ev])
        assert types(events)[-2:] == ["NOTIFICATIONS_MISSED", "MESSAGE_ADDED"]
        missed = events[-2]
        assert missed.email_address == "quiet@example.com"

        # Still dropping: the poll brings the next change in, without a second warning.
        sim.advance_clock(2)
        second = sim.insert_message("quiet@example.com", label_ids=["INBOX"])
        events = await collect(service, auth, lambda ev: second["id"] in [e.message_id for e in ev])
        assert types(events).count("NOTIFICATIONS_MISSED") == 1

        # Notifications are back: the one that arrives ends the episode.
        sim.set_notification_faults(drop_fraction=0.0)
        sim.advance_clock(2)
        third = sim.insert_message("quiet@example.com", label_ids=["INBOX"])
        events = await collect(service, auth, lambda ev: third["id"] in [e.message_id for e in ev])
        assert types(events).count("NOTIFICATIONS_MISSED") == 1

        async def notified():
            async with service.app.sessions() as session:
                row = (await session.execute(text(
                    "SELECT notified_history_id, notifications_missed_reported FROM mailboxes"
                ))).one()
            return row.notified_history_id >= int(third["historyId"]) and not row.notifications_missed_reported

        await eventually(notified)

        # Dropped again: a new episode, a new warning.
        sim.set_notification_faults(drop_fraction=1.0)
        sim.advance_clock(2)
        fourth = sim.insert_message("quiet@example.com", label_ids=["INBOX"])
        events = await collect(service, auth, lambda ev: fourth["id"] in [e.message_id for e in ev])
        assert types(events).count("NOTIFICATIONS_MISSED") == 2
        assert types(events)[-2:] == ["NOTIFICATIONS_MISSED", "MESSAGE_ADDED"]


async def test_watch_expiring_for_the_one_mailbox_whose_renewal_gmail_keeps_refusing(make_service):
    """The simulator's control API refuses one mailbox's users.watch and lets its watch lapse;
    only that mailbox is warned, then reported expired, while its neighbour renews."""
    clock = OffsetClock()
    async with make_service(clock=clock, renew_loop_seconds=0.2, poll_enabled=False) as service:
        sim = service.sim
        sim.configure(history_retention_seconds=None)
        _, auth = await service.new_tenant()
        for email in ("fading@example.com", "steady@example.com"):
            await service.mailboxes.RegisterMailbox(sa_request(sim, email), metadata=auth)
        sim.refuse_watch("fading@example.com")

        def of(events, kind: str) -> list[str]:
            return [e.email_address for e in events if types([e]) == [kind]]

        advance(service, clock, 5.5 * DAY)  # renewals due; fading's watch expires within 48 h
        events = await collect(service, auth, lambda ev: of(ev, "WATCH_EXPIRING") and of(ev, "WATCH_RENEWED"))
        assert of(events, "WATCH_EXPIRING") == ["fading@example.com"]
        assert of(events, "WATCH_RENEWED") == ["steady@example.com"]
        [warning] = [e for e in events if e.type == resources_pb2.EVENT_TYPE_WATCH_EXPIRING]
        assert warning.attributes["reason"] == "GMAIL_UNAVAILABLE"

        # At Gmail the watch lapses (made to lapse now); the service reports it once its own
        # record of the expiration is past, for that mailbox only.
        assert sim.expire_watch("fading@example.com")["watch"]["expired"] is True
        assert sim.mailbox("steady@example.com")["watch"]["expired"] is False
        advance(service, clock, 2 * DAY)
        events = await collect(service, auth, lambda ev: of(ev, "WATCH_EXPIRED"))
        assert of(events, "WATCH_EXPIRED") == ["fading@example.com"]
        assert of(events, "WATCH_EXPIRING") == ["fading@example.com"]

        # Gmail accepts the watch again: the next renewal succeeds.
        sim.refuse_watch("fading@example.com", False)
        advance(service, clock, 3600)
        events = await collect(service, auth, lambda ev: "fading@example.com" in of(ev, "WATCH_RENEWED"))
        assert sim.mailbox("fading@example.com")["watch"]["expired"] is False


async def test_notifications_missed_only_for_changes_the_watch_would_have_announced(make_service):
    """Under an INCLUDE INBOX watch Gmail announces nothing about a message outside INBOX. The
    fallback poll finding such a change (the deletion of a spam message, reported because a
    deleted message's labels cannot be known) is no sign of dropped notifications; a new INBOX
    message found by the poll is."""
    async with make_service(poll_interval_seconds=1.0) as service:
        sim = service.sim
        email = "filtered-quiet@example.com"
        _, auth = await service.new_tenant()
        await service.mailboxes.RegisterMailbox(sa_request(sim, email, label_ids=["INBOX"]), metadata=auth)
        sim.advance_clock(2)
        sim.set_notification_faults(drop_fraction=1.0)

        spam = sim.insert_message(email, label_ids=["SPAM"])
        sim.delete_message(email, spam["id"])
        events = await collect(service, auth, lambda ev: spam["id"] in [e.message_id for e in ev])
        assert types(events)[-1] == "MESSAGE_DELETED"
        assert "NOTIFICATIONS_MISSED" not in types(events)

        sim.advance_clock(2)
        inbox = sim.insert_message(email, label_ids=["INBOX"])
        events = await collect(service, auth, lambda ev: inbox["id"] in [e.message_id for e in ev])
        assert types(events).count("NOTIFICATIONS_MISSED") == 1
        assert types(events)[-2:] == ["NOTIFICATIONS_MISSED", "MESSAGE_ADDED"]
