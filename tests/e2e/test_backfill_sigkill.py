"""A backfill survives a SIGKILL of `mailwatch serve` mid-way (issue 25 item 1).

The service runs as a real process; it is killed with SIGKILL while it is delivering a
500-message backfill, 20 messages arrive live while it is down, and a new process takes the
backfill over once the killed one's lease lapses. The stream then holds every message once:
the 500 old ones as MESSAGE_EXISTING, oldest first, the 20 new ones as MESSAGE_ADDED, and
one BACKFILL_COMPLETED after the last MESSAGE_EXISTING.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc, resources_pb2
from tests.fixtures.factory import register_at, service_account_request, tenant_key_at
from tests.fixtures.names import TEST_PROJECT
from tests.fixtures.processes import ServiceProcess
from tests.fixtures.service import service_settings
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.e2e

ET = resources_pb2.EventType
LEASE_SECONDS = 3.0
ADDRESS = "killed-backfill@example.com"


async def _mailbox(target: str, auth, mailbox_id: str) -> resources_pb2.Mailbox:
    async with grpc.aio.insecure_channel(target) as channel:
        return await mailbox_service_pb2_grpc.MailboxServiceStub(channel).GetMailbox(
            mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox_id), metadata=auth)


async def _events(target: str, auth, done) -> list:
    """Every event from the earliest until `done(events)`."""
    events: list = []
    async with grpc.aio.insecure_channel(target) as channel:
        call = mailbox_service_pb2_grpc.MailboxServiceStub(channel).StreamChanges(
            mailbox_service_pb2.StreamChangesRequest(start_position=mailbox_service_pb2.START_POSITION_EARLIEST),
            metadata=auth,
        )
        async for response in call:
            events.extend(response.events)
            if done(events):
                call.cancel()
                break
    return events


# Its own waits add up to more than the default 120 s (60 + LEASE_SECONDS + 90 + 60, two process
# starts), and as the first test of a run in file order it also pays for starting the session's
# Postgres and Pub/Sub emulator (43 s of setup beside its 77 s under two CPU burners).
@pytest.mark.timeout(300)
async def test_a_backfill_killed_mid_way_resumes_with_no_gap_and_no_duplicate(database_url, gmail_sim, pubsub_topic):
    settings = service_settings(
        database_url, gmail_sim.url, pubsub_topic["topic"], pubsub_topic["subscription"],
        sync_lease_seconds=LEASE_SECONDS, sync_backfill_units_per_minute=10_000_000, grace_seconds=1.0,
    )
    env = settings.environment()
    gmail_sim.create_mailbox(ADDRESS)
    old = [m["id"] for m in gmail_sim.insert_messages(
        [{"emailAddress": ADDRESS, "labelIds": ["INBOX"], "subject": f"old {n}"} for n in range(500)])]
    # Slow lookups: the backfill is still delivering when it is killed.
    gmail_sim.add_latency("users.messages.get", 0.3, user=ADDRESS)
    victim = ServiceProcess(env).start()
    survivor = None
    try:
        auth = (await tenant_key_at(victim.target, "backfilled")).auth
        request = service_account_request(ADDRESS, gmail_sim.create_service_account_key(project_id=TEST_PROJECT))
        request.backfill.newest = 500
        mailbox_id = await register_at(victim.target, auth, request)

        async def delivering():
            progress = (await _mailbox(victim.target, auth, mailbox_id)).backfill
            return progress.delivered_count >= 100 and progress

        progress = await eventually(delivering, timeout=60, what="the backfill delivering")
        victim.kill()
        assert progress.delivered_count < 500, "killed too late: the backfill had already finished"
        gmail_sim.clear_latency()  # it only had to keep the victim busy until the kill
        live = [gmail_sim.insert_message(ADDRESS, label_ids=["INBOX"], subject=f"live {n}")["id"] for n in range(20)]

        survivor = ServiceProcess(env).start()

        def everything(events) -> bool:
            return (any(e.type == ET.EVENT_TYPE_BACKFILL_COMPLETED for e in events)
                    and {e.message_id for e in events if e.type == ET.EVENT_TYPE_MESSAGE_ADDED} >= set(live))

        await asyncio.wait_for(_events(survivor.target, auth, everything), LEASE_SECONDS + 90)
        # A marker that arrives after everything: once it is streamed, the live sync has passed every
        # message before it and the backfill is over, so any duplicate would be in the stream by then.
        marker = gmail_sim.insert_message(ADDRESS, label_ids=["INBOX"])["id"]
        final = await asyncio.wait_for(
            _events(survivor.target, auth, lambda seen: any(e.message_id == marker for e in seen)), 60)
        done = await _mailbox(survivor.target, auth, mailbox_id)
    finally:
        victim.kill()
        if survivor is not None:
            survivor.kill()

    existing = [e.message_id for e in final if e.type == ET.EVENT_TYPE_MESSAGE_EXISTING]
    added = [e.message_id for e in final if e.type == ET.EVENT_TYPE_MESSAGE_ADDED]
    assert existing == old, "every old message once, oldest first, across the kill"
    assert added == live + [marker]
    [completed] = [i for i, e in enumerate(final) if e.type == ET.EVENT_TYPE_BACKFILL_COMPLETED]
    assert completed > max(i for i, e in enumerate(final) if e.type == ET.EVENT_TYPE_MESSAGE_EXISTING)
    assert dict(final[completed].attributes) == {"listed": "500", "delivered": "500", "skipped": "0"}
    assert done.backfill.state == resources_pb2.BACKFILL_STATE_COMPLETED
    assert (done.backfill.listed_count, done.backfill.delivered_count) == (500, 500)
