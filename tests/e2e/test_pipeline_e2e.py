"""The whole pipeline with the service as a real process, killed with SIGKILL mid-way.

Two tenants, three mailboxes (one with a label filter, one with message
metadata on MESSAGE_ADDED). The simulator adds,
relabels and deletes messages; each tenant's consumer must receive exactly
its own changes, in history order per mailbox, matching the simulator's
ground truth — with no gap and no duplicate across a SIGKILL and restart,
resuming from the last cursor it saw.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from mailwatch_devstack.ports import free_port
from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc
from mailwatch.v1 import resources_pb2
from tests.fixtures.factory import bearer, register_at, sa_request, tenant_key_at
from tests.fixtures.processes import ServiceProcess
from tests.fixtures.service import service_settings
from tests.fixtures.waiting import eventually, stays

pytestmark = pytest.mark.e2e

ET = resources_pb2.EventType
CHANGE_TYPES = {ET.EVENT_TYPE_MESSAGE_ADDED, ET.EVENT_TYPE_MESSAGE_DELETED, ET.EVENT_TYPE_LABELS_ADDED,
                ET.EVENT_TYPE_LABELS_REMOVED}


class Consumer:
    """A tenant's stream consumer that survives server restarts by resuming from its last cursor."""

    def __init__(self, target: str, api_key: str) -> None:
        self.target = target
        self.auth = [("authorization", f"Bearer {api_key}")]
        self.events: list = []
        self.cursor: bytes = b""
        self.reconnects = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            if self.cursor:
                request = mailbox_service_pb2.StreamChangesRequest(cursor=self.cursor)
            else:
                request = mailbox_service_pb2.StreamChangesRequest(
                    start_position=mailbox_service_pb2.START_POSITION_EARLIEST
                )
            try:
                async with grpc.aio.insecure_channel(self.target) as channel:
                    stub = mailbox_service_pb2_grpc.MailboxServiceStub(channel)
                    async for response in stub.StreamChanges(request, metadata=self.auth):
                        for event in response.events:
                            self.events.append(event)
                            self.cursor = event.cursor
                        if response.heartbeat.cursor:
                            self.cursor = response.heartbeat.cursor
            except grpc.aio.AioRpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                        grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
                    raise
            self.reconnects += 1
            await asyncio.sleep(0.2)  # the consumer's reconnect backoff

    def changes(self, mailbox_id: str) -> list[tuple[str, str]]:
        return [(ET.Name(e.type), e.message_id) for e in self.events
                if e.type in CHANGE_TYPES and e.mailbox_id == mailbox_id]


async def _register(target: str, api_key: str, sim, email: str, label_ids=(), metadata: bool = False) -> str:
    request = sa_request(sim, email, label_ids=list(label_ids),
                         metadata=resources_pb2.MetadataOptions(enabled=True) if metadata else None)
    return await register_at(target, bearer(api_key), request)


def _make_changes(sim, email: str, expected: list, *, watched: bool = True, spam: bool = False) -> None:
    """Add, relabel and delete messages, appending what the tenant must see to `expected`."""
    first = sim.insert_message(email, label_ids=["INBOX", "UNREAD"])
    second = sim.insert_message(email, label_ids=["INBOX"])
    expected += [("EVENT_TYPE_MESSAGE_ADDED", first["id"]), ("EVENT_TYPE_MESSAGE_ADDED", second["id"])]
    if spam:  # outside an INCLUDE INBOX filter: never seen
        junk = sim.insert_message(email, label_ids=["SPAM"])
        sim.modify_labels(email, junk["id"], add=["STARRED"])
    sim.modify_labels(email, first["id"], add=["STARRED"], remove=["UNREAD"])
    expected += [("EVENT_TYPE_LABELS_ADDED", first["id"]), ("EVENT_TYPE_LABELS_REMOVED", first["id"])]
    sim.delete_message(email, second["id"])
    expected.append(("EVENT_TYPE_MESSAGE_DELETED", second["id"]))


async def test_two_tenants_survive_a_sigkill_without_gap_or_duplicate(database_url, gmail_sim, pubsub_topic):
    port = free_port()
    settings = service_settings(
        database_url, gmail_sim.url, pubsub_topic["topic"], pubsub_topic["subscription"],
        listen=f"127.0.0.1:{port}", sync_lease_seconds=5.0, grace_seconds=1.0,
    )
    env = settings.environment()
    service = ServiceProcess(env).start()
    target = service.target
    consumers: list[Consumer] = []
    try:
        key_a = (await tenant_key_at(target, "tenant-a")).key
        key_b = (await tenant_key_at(target, "tenant-b")).key
        mailboxes = {
            "a1@example.com": (await _register(target, key_a, gmail_sim, "a1@example.com"), key_a, False),
            "a2@example.com": (await _register(target, key_a, gmail_sim, "a2@example.com", ["INBOX"]), key_a, True),
            "b1@example.com": (await _register(target, key_b, gmail_sim, "b1@example.com", metadata=True), key_b, False),
        }
        consumer_a, consumer_b = Consumer(target, key_a), Consumer(target, key_b)
        consumers = [consumer_a, consumer_b]
        for consumer in consumers:
            consumer.start()
        consumer_of = {key_a: consumer_a, key_b: consumer_b}
        expected: dict[str, list] = {email: [] for email in mailboxes}

        def delivered() -> bool:
            return all(
                len(consumer_of[key].changes(mailbox_id)) >= len(expected[email])
                for email, (mailbox_id, key, _) in mailboxes.items()
            )

        # Phase 1: everything flows.
        for email, (_, _, filtered) in mailboxes.items():
            _make_changes(gmail_sim, email, expected[email], spam=filtered)
        await eventually(delivered, timeout=30, what="phase 1 changes")

        # Phase 2: changes, then SIGKILL while they are in flight (the first has reached a consumer).
        seen = sum(len(consumer.events) for consumer in consumers)
        for email, (_, _, filtered) in mailboxes.items():
            _make_changes(gmail_sim, email, expected[email], spam=filtered)
        await eventually(lambda: sum(len(consumer.events) for consumer in consumers) > seen,
                         what="phase 2 under way")
        service.kill()

        # Phase 3: changes while the service is down (notifications wait in Pub/Sub).
        for email, (_, _, filtered) in mailboxes.items():
            _make_changes(gmail_sim, email, expected[email], spam=filtered)
        service = ServiceProcess(env).start()
        await eventually(delivered, timeout=45, what="all changes after the restart")
        # Anything extra (a duplicate) would arrive within this time: delivery takes well under it.
        total = sum(len(consumer.events) for consumer in consumers)
        await stays(lambda: sum(len(consumer.events) for consumer in consumers) == total, 1.5,
                    what="no duplicate arrives")

        for email, (mailbox_id, key, _) in mailboxes.items():
            assert consumer_of[key].changes(mailbox_id) == expected[email], email
        for consumer, own in ((consumer_a, {mailboxes["a1@example.com"][0], mailboxes["a2@example.com"][0]}),
                              (consumer_b, {mailboxes["b1@example.com"][0]})):
            assert {e.mailbox_id for e in consumer.events} == own, "a tenant saw another tenant's mailbox"
            ids = [e.id for e in consumer.events]
            assert len(ids) == len(set(ids)), "an event was delivered twice"
            assert consumer.reconnects >= 1, "the consumer never had to resume"
            watch_started = [e.mailbox_id for e in consumer.events if e.type == ET.EVENT_TYPE_WATCH_STARTED]
            assert sorted(watch_started) == sorted(own)
            for mailbox_id in own:
                history = [e.history_id for e in consumer.events if e.mailbox_id == mailbox_id and e.type in CHANGE_TYPES]
                assert history == sorted(history)
        # The opted-in mailbox never shows a MESSAGE_ADDED without its metadata (fetched before the
        # commit, refetched after the kill); the others never carry any.
        for email, (mailbox_id, key, _) in mailboxes.items():
            added = [e for e in consumer_of[key].events
                     if e.mailbox_id == mailbox_id and e.type == ET.EVENT_TYPE_MESSAGE_ADDED]
            if email == "b1@example.com":
                assert all(e.HasField("metadata") for e in added)
                present = [e for e in added if not e.metadata.missing]
                assert present, "every message was deleted before its metadata was fetched"
                assert all({h.name: h.value for h in e.metadata.headers}.get("Subject") == "Hello" for e in present)
            else:
                assert not any(e.HasField("metadata") for e in added)
    finally:
        for consumer in consumers:
            await consumer.stop()
        service.kill()
