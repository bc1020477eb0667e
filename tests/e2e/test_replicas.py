"""Two `mailwatch serve` replicas on one Postgres and one Pub/Sub subscription.

They divide the mailboxes between them (leases, SKIP LOCKED). One is killed
with SIGKILL while it holds a sync lease; the survivor takes its mailboxes
over once the lease lapses, and a stream on the survivor receives every
change exactly once, in history order per mailbox — including the changes
the killed replica committed.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import psycopg
import pytest

from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc
from mailwatch.v1 import resources_pb2
from tests.fixtures.factory import register_at, service_account_request, tenant_key_at
from tests.fixtures.processes import ServiceProcess
from tests.fixtures.names import TEST_PROJECT
from tests.fixtures.service import service_settings
from tests.fixtures.waiting import eventually, stays

pytestmark = pytest.mark.e2e

ET = resources_pb2.EventType
CHANGES = {ET.EVENT_TYPE_MESSAGE_ADDED, ET.EVENT_TYPE_MESSAGE_DELETED, ET.EVENT_TYPE_LABELS_ADDED,
           ET.EVENT_TYPE_LABELS_REMOVED}
LEASE_SECONDS = 3.0
MAILBOXES = [f"replica{n}@example.com" for n in range(6)]


class Stream:
    """One StreamChanges call from the earliest event, collecting everything it gets."""

    def __init__(self, target: str, auth) -> None:
        self.events: list = []
        self._channel = grpc.aio.insecure_channel(target)
        self._call = mailbox_service_pb2_grpc.MailboxServiceStub(self._channel).StreamChanges(
            mailbox_service_pb2.StreamChangesRequest(start_position=mailbox_service_pb2.START_POSITION_EARLIEST),
            metadata=auth,
        )
        self._task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        async for response in self._call:
            self.events.extend(response.events)

    def changes(self, email: str) -> list[tuple[str, str]]:
        return [(ET.Name(e.type), e.message_id) for e in self.events if e.type in CHANGES and e.email_address == email]

    async def close(self) -> None:
        self._call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._channel.close()


def _change(sim, email: str, round_: int, expected: list) -> None:
    """One round of changes to a mailbox, appending what a consumer must see."""
    added = sim.insert_message(email, label_ids=["INBOX", "UNREAD"])
    expected.append(("EVENT_TYPE_MESSAGE_ADDED", added["id"]))
    if round_ % 2:
        sim.modify_labels(email, added["id"], remove=["UNREAD"])
        expected.append(("EVENT_TYPE_LABELS_REMOVED", added["id"]))
    if round_ % 3 == 2:
        sim.delete_message(email, added["id"])
        expected.append(("EVENT_TYPE_MESSAGE_DELETED", added["id"]))


def _leases_held_by(database_url: str, pid: int) -> int:
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM mailboxes WHERE lease_owner LIKE %s AND lease_expires_at > now()",
            (f"%:{pid}:%",),
        ).fetchone()[0]


async def test_a_sigkilled_replicas_mailboxes_are_taken_over_with_no_lost_or_duplicated_event(
    database_url, gmail_sim, pubsub_topic
):
    settings = service_settings(
        database_url, gmail_sim.url, pubsub_topic["topic"], pubsub_topic["subscription"],
        sync_lease_seconds=LEASE_SECONDS, poll_interval_seconds=1.0, grace_seconds=1.0,
    )
    env = settings.environment()
    survivor, victim = ServiceProcess(env).start(), ServiceProcess(env).start()
    stream = None
    try:
        auth = (await tenant_key_at(survivor.target, "replicated")).auth
        key = gmail_sim.create_service_account_key(project_id=TEST_PROJECT)
        for n, email in enumerate(MAILBOXES):  # through both replicas
            gmail_sim.create_mailbox(email)
            await register_at((survivor, victim)[n % 2].target, auth, service_account_request(email, key))
        stream = Stream(survivor.target, auth)
        expected: dict[str, list] = {email: [] for email in MAILBOXES}

        # Changes keep coming; the victim is killed the moment it is seen holding a sync lease.
        killed_holding_lease = False
        killed_at = None
        round_ = 0
        deadline = time.monotonic() + 20
        while killed_at is None or round_ < 12:
            for email in MAILBOXES:
                _change(gmail_sim, email, round_, expected[email])
            round_ += 1
            if killed_at is None:
                watch_until = time.monotonic() + 0.4
                while time.monotonic() < watch_until:
                    if _leases_held_by(database_url, victim.process.pid):
                        victim.kill()
                        killed_holding_lease, killed_at = True, time.monotonic()
                        break
                    await asyncio.sleep(0.005)  # how often the victim's leases are looked at
                if killed_at is None and time.monotonic() > deadline:
                    victim.kill()
                    killed_at = time.monotonic()
            else:
                await asyncio.sleep(0.2)  # the pace of changes in Gmail after the kill
        assert killed_holding_lease, "the victim never held a lease: the replicas did not divide the work"

        def delivered() -> bool:
            return all(len(stream.changes(email)) >= len(expected[email]) for email in MAILBOXES)

        try:
            await eventually(delivered, timeout=LEASE_SECONDS + 20, what="changes delivered after the takeover")
        except AssertionError:
            missing = {e: len(expected[e]) - len(stream.changes(e)) for e in MAILBOXES}
            raise AssertionError(f"changes not delivered after the takeover: {missing}") from None
        # A duplicate would arrive within this time: delivery takes well under it.
        total = len(stream.events)
        await stays(lambda: len(stream.events) == total, 1.5, what="no duplicate arrives")

        for email in MAILBOXES:
            assert stream.changes(email) == expected[email], email  # each once, in the order Gmail made them
            history = [e.history_id for e in stream.events if e.email_address == email and e.type in CHANGES]
            assert history == sorted(history)
        ids = [e.id for e in stream.events]
        assert len(ids) == len(set(ids))
        assert sorted(e.email_address for e in stream.events if e.type == ET.EVENT_TYPE_WATCH_STARTED) == MAILBOXES
        # Nothing is left leased to the dead replica beyond its lease.
        assert _leases_held_by(database_url, victim.process.pid) == 0
    finally:
        if stream is not None:
            await stream.close()
        victim.kill()
        survivor.kill()
