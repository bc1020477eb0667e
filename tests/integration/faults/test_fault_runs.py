"""Fault runs: under steady load, Postgres, the Pub/Sub emulator and the Gmail
simulator are each stopped for a while and started again; the consumer's
events must then match the simulator's ground truth exactly (no gap, no
duplicate, history order per mailbox).

The test has peers of its own (a private Postgres cluster, Pub/Sub emulator
and simulator), so stopping them touches no other test. Every outage lasts
until the service has observably noticed it and more changes were made in
Gmail meanwhile: conditions, not sleeps. The emulator forgets its topics when
it restarts (Cloud Pub/Sub does not); the test recreates them, as an operator
would, and the notifications published meanwhile are lost, which the fallback
poll must cover.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

import pytest
from google.cloud import pubsub_v1
from prometheus_client import REGISTRY

from mailwatch_devstack.pubsub_emulator import PubSubEmulator
from mailwatch_devstack.gmail_sim import GmailSimulator, SimulatorControl
from mailwatch_client import AsyncMailwatchClient, EventType, RetryConfig
from tests.fixtures.service import run_service, service_settings
from tests.fixtures.simulator import TestSimulator
from tests.fixtures.waiting import eventually
from tests.integration.client.conftest import api_key_of, sa_credentials

pytestmark = pytest.mark.integration

MESSAGE_ADDED = EventType.Value("EVENT_TYPE_MESSAGE_ADDED")
FAST_RECONNECT = RetryConfig(initial_backoff=0.1, max_backoff=0.5, max_attempts=0)
ADDRESSES = [f"fault-{n}@example.com" for n in range(4)]
CHANGES_PER_OUTAGE = 8  # made in Gmail while each peer is down (or, for the simulator, around it)


async def wait_until(check, what: str, timeout: float = 90.0) -> None:
    """`eventually` with the patience an outage and its recovery need."""
    await eventually(check, timeout=timeout, what=what)


def sync_retries() -> float:
    return REGISTRY.get_sample_value("mailwatch_syncs_total", {"outcome": "retry"}) or 0.0


def create_topic_and_subscription(names: dict) -> None:
    with pubsub_v1.PublisherClient() as publisher:  # type: ignore[attr-defined]
        publisher.create_topic(name=names["topic"])
    with pubsub_v1.SubscriberClient() as subscriber:
        subscriber.create_subscription(name=names["subscription"], topic=names["topic"], ack_deadline_seconds=10)


class Load:
    """Adds messages round-robin to the mailboxes and records what the simulator
    accepted (the ground truth). `paused()` holds it between two inserts, so no
    insert is in flight when the simulator goes down."""

    def __init__(self, sim: SimulatorControl) -> None:
        self.sim = sim
        self.inserted: dict[str, list[str]] = defaultdict(list)
        self.count = 0
        self._gate = asyncio.Lock()
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        turn = 0
        while True:
            async with self._gate:
                address = ADDRESSES[turn % len(ADDRESSES)]
                message = await asyncio.to_thread(self.sim.insert_message, address, label_ids=["INBOX"])
                self.inserted[address].append(message["id"])
                self.count += 1
            turn += 1
            await asyncio.sleep(0.05)  # the pace of changes in Gmail

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.asynccontextmanager
    async def paused(self):
        async with self._gate:
            yield

    async def more(self, count: int, what: str) -> None:
        target = self.count + count
        await wait_until(lambda: self.count >= target, f"{count} more changes {what}")


@pytest.fixture
def private_emulator(monkeypatch, pubsub_names):
    # After the suite's shared emulator (which sets PUBSUB_EMULATOR_HOST once) is up.
    emulator = PubSubEmulator().start()
    # Every Pub/Sub client built in this test (ingest, the simulator's publisher) talks to it.
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    holder = {"emulator": emulator}
    try:
        yield holder
    finally:
        holder["emulator"].stop()


@pytest.mark.timeout(420)
async def test_postgres_emulator_and_simulator_outages_lose_and_duplicate_nothing(
    private_postgres, private_emulator, pubsub_names
):
    database, url = private_postgres
    emulator = private_emulator["emulator"]
    create_topic_and_subscription(pubsub_names)
    simulator = GmailSimulator(pubsub_emulator_host=emulator.host)
    sim_url = simulator.start(host="127.0.0.1", port=0)
    sim_port = int(sim_url.rsplit(":", 1)[1])
    sim = TestSimulator(sim_url)
    settings = service_settings(
        url, sim_url, pubsub_names["topic"], pubsub_names["subscription"], sync_lease_seconds=3
    )
    events: list = []
    load = Load(sim)
    try:
        async with run_service(settings, sim, pubsub_names["topic"], pubsub_names["subscription"]) as service:
            _, auth = await service.new_tenant()
            async with AsyncMailwatchClient(service.target, api_key_of(auth), stream_retry=FAST_RECONNECT) as client:
                for address in ADDRESSES:
                    await client.register_mailbox(address, credentials=sa_credentials(sim, address))
                stream = client.stream_changes(start="earliest", heartbeat_interval=1)

                async def consume():
                    async for event in stream:
                        events.append(event)

                consumer = asyncio.create_task(consume())
                load.start()
                try:
                    await load.more(CHANGES_PER_OUTAGE, "before any outage")

                    # 1. Postgres down: LISTEN drops, RPCs and the stream fail UNAVAILABLE, ingest cannot write.
                    await asyncio.to_thread(database.stop_server)
                    await wait_until(lambda: not service.app.notifier.connected, "LISTEN noticed Postgres is down")
                    await load.more(CHANGES_PER_OUTAGE, "while Postgres is down")
                    await asyncio.to_thread(database.start_server)

                    # 2. The emulator down: pulls fail, the simulator's notifications are lost.
                    failures = service.app.ingestor.stats.pull_failures
                    await asyncio.to_thread(emulator.stop)
                    await wait_until(lambda: service.app.ingestor.stats.pull_failures > failures,
                                     "ingest noticed the emulator is down")
                    await load.more(CHANGES_PER_OUTAGE, "while the emulator is down")
                    emulator = private_emulator["emulator"] = await asyncio.to_thread(
                        PubSubEmulator(port=emulator.port).start)
                    await asyncio.to_thread(create_topic_and_subscription, pubsub_names)

                    # 3. The simulator (Gmail) down: syncs fail and back off.
                    await load.more(CHANGES_PER_OUTAGE, "before the simulator stops")
                    retries = sync_retries()
                    async with load.paused():
                        await asyncio.to_thread(simulator.stop)
                        await wait_until(lambda: sync_retries() > retries, "sync noticed Gmail is unreachable")
                        await asyncio.to_thread(simulator.start, "127.0.0.1", sim_port)
                    await load.more(CHANGES_PER_OUTAGE, "after the simulator is back")
                finally:
                    await load.stop()
                expected = {address: list(ids) for address, ids in load.inserted.items()}
                try:
                    await wait_until(
                        lambda: sum(1 for e in events if e.type == MESSAGE_ADDED) >= sum(map(len, expected.values())),
                        "every change on the stream", timeout=120,
                    )
                    assert not consumer.done(), consumer  # the consumer never gave up
                    assert stream.reconnects >= 1
                finally:
                    await stream.aclose()
                    await asyncio.wait_for(consumer, 10)
    finally:
        simulator.stop()

    # The simulator's own count agrees with what the load recorded.
    for address in ADDRESSES:
        assert sim_total(simulator, address) == len(expected[address])
    seen: dict[str, list[str]] = defaultdict(list)
    for event in events:
        if event.type == MESSAGE_ADDED:
            seen[event.email_address].append(event.message_id)
    # No gap, no duplicate, and each mailbox's changes in Gmail's order.
    assert dict(seen) == expected
    assert len({e.id for e in events}) == len(events)


def sim_total(simulator: GmailSimulator, address: str) -> int:
    with simulator.state.lock:
        return len(simulator.state.mailboxes[address].messages)
