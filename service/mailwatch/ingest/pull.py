"""Pull ingest: batched synchronous pull from the Gmail notification subscription(s).

Synchronous `pull(max_messages=…)` + one batched `acknowledge`, not streaming
pull: on the emulator it moves about ten times the messages per second of
streaming pull with an ack per message (`benchmarks/pubsub_pull.py`; figures in
docs/performance.md). It also fits the write side: a pulled batch becomes ONE
Postgres statement in autocommit (many notifications for a mailbox collapse to
its highest history id), and we ack exactly the ids of the batch we just
committed — no per-message callbacks on the client's thread pool to re-batch,
and "ack only after the durable write" is one line to read.

Where a batch's time goes: the pull, reading the messages (from the raw
protobuf: proto-plus's wrappers cost more per message than the pull itself),
the one-statement write, which waits on mailbox rows a sync's page commit
holds, and the acknowledge. Each subscription runs
several pullers (`MAILWATCH_INGEST_CONCURRENCY`, default 4) so one pulls while
others write and ack; under a heavy load, ingest runs in replicas of its own
(`MAILWATCH_ROLE=ingest`), where it does not share a core with the syncs its
notifications cause. The stages a notification spends here are exported as
`mailwatch_pipeline_stage_seconds` (`mailwatch.stages`).

Flow control: each subscription has `concurrency` puller(s), each with at
most one batch in flight, so at most `batch_size × concurrency` messages per
subscription are outstanding (leased and not yet acked). Bytes are bounded
too: when a batch's data exceeds `max_batch_bytes`, the next pull asks for
proportionally fewer messages, growing back once batches are small again; the
data of an over-size message is cut right after receipt (it is malformed
anyway), so it is not held while the batch is written.

Failure handling: if the database write fails the batch is not acked; its
messages are nacked (ack deadline 0) so Pub/Sub redelivers them, and the
puller backs off exponentially with jitter. The write is idempotent
(GREATEST / COALESCE), so redelivery after a crash between commit and ack, or
an ack that is lost, is harmless. The calls run on the event loop
(`mailwatch.ingest.subscriber`, grpc.aio): no worker thread per call.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from google.api_core import exceptions as google_exceptions

from mailwatch import stages
from mailwatch.clock import Clock, SystemClock
from mailwatch.config import IngestSettings
from mailwatch.ingest import metrics
from mailwatch.ingest.decode import MAX_DATA_BYTES, attributes_of
from mailwatch.ingest.record import IngestStats, Received, record_batch
from mailwatch.ingest.sources import DEPLOYMENT, SubscriptionHealth
from mailwatch.ingest.subscriber import Subscriber, connect
from mailwatch.store.db import Sessions

log = logging.getLogger(__name__)

# Pub/Sub accepts at most 1000 messages per pull and keeps ack requests small.
MAX_PULL_MESSAGES = 1000
ACK_CHUNK = 1000


class PullIngestor:
    """Pulls Gmail notifications from Pub/Sub and records them in Postgres.

    `start()` launches the pullers and returns; `stop()` lets every puller
    finish (write + ack) the batch it holds, then closes the client.
    """

    def __init__(
        self,
        sessionmaker: Sessions,
        subscriptions: Sequence[str],
        *,
        enabled: bool = True,
        batch_size: int = MAX_PULL_MESSAGES,
        concurrency: int = 1,
        max_batch_bytes: int = 10 * 1024 * 1024,
        pull_timeout: float = 10.0,
        idle_seconds: float = 0.2,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        write_timeout: float | None = None,
        clock: Clock | None = None,
        subscriber_factory: Callable[[], Awaitable[Subscriber]] = connect,
        on_marked_due: Callable[[], None] | None = None,
        sources: Callable[[], Awaitable[dict[str, str]]] | None = None,
        sources_refresh_seconds: float = 30.0,
    ) -> None:
        if not 1 <= batch_size <= MAX_PULL_MESSAGES:
            raise ValueError(f"batch_size must be 1..{MAX_PULL_MESSAGES}, got {batch_size}")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.sessionmaker = sessionmaker
        self.subscriptions = tuple(subscriptions)
        self.enabled = enabled
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.max_batch_bytes = max_batch_bytes
        self.pull_timeout = pull_timeout
        self.idle_seconds = idle_seconds
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.write_timeout = write_timeout
        self.clock = clock or SystemClock()
        self._subscriber_factory = subscriber_factory
        self.on_marked_due = on_marked_due  # e.g. the sync worker's wake()
        self.stats = IngestStats()
        self._client: Subscriber | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopping = asyncio.Event()
        self._consecutive_failures = 0
        # Every subscription to pull -> its owner ("deployment" or a tenant id),
        # re-read every `sources_refresh_seconds` (tenants' settings change).
        self.sources = sources
        self.sources_refresh_seconds = sources_refresh_seconds
        self.health = SubscriptionHealth(sessionmaker, self.clock)
        self._retired: dict[str, asyncio.Event] = {}  # subscription -> set when it is no longer configured

    @classmethod
    def from_settings(
        cls, settings: IngestSettings, sessionmaker: Sessions, subscriptions: Sequence[str],
        **wiring,
    ) -> "PullIngestor":
        """Built from its settings section; `wiring` is the rest (clock, on_marked_due, sources)."""
        return cls(
            sessionmaker, subscriptions, enabled=settings.enabled, batch_size=settings.batch_size,
            concurrency=settings.concurrency, pull_timeout=settings.pull_timeout,
            sources_refresh_seconds=settings.sources_refresh_seconds, **wiring,
        )

    # --- lifecycle -----------------------------------------------------------

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    @property
    def healthy(self) -> bool:
        """False while the last write or pull failed (the puller is backing off)."""
        return self._consecutive_failures == 0

    def status(self) -> dict:
        return {
            "enabled": self.enabled,
            "running": self.running,
            "healthy": self.healthy,
            "subscriptions": list(self._retired or self.subscriptions),
            **self.stats.snapshot(),
        }

    async def start(self) -> None:
        if not self.enabled or self._tasks or not (self.subscriptions or self.sources):
            return
        self._stopping.clear()
        if self.subscriptions:
            self._client = await self._subscriber_factory()
        for subscription in self.subscriptions:
            self._spawn(subscription, DEPLOYMENT)
        if self.sources is not None:
            await self._refresh_sources()
            self._tasks.append(asyncio.create_task(self._watch_sources(), name="ingest-sources"))
        log.info("ingest pulling", extra={"subscriptions": list(self._retired)})

    def _spawn(self, subscription: str, owner: str) -> None:
        """Start `concurrency` pull loops for one subscription, with their own backoff."""
        self.health.owned_by(subscription, owner)
        retired = self._retired[subscription] = asyncio.Event()
        for n in range(self.concurrency):
            self._tasks.append(asyncio.create_task(self._run(subscription, retired),
                                                   name=f"ingest-pull-{subscription}-{n}"))

    async def _refresh_sources(self) -> None:
        try:
            wanted = await self.sources()
        except Exception as exc:  # noqa: BLE001 - keep pulling what we have; look again later
            log.warning("could not read the configured subscriptions", extra={"error": repr(exc)})
            return
        if self._client is None and wanted:
            # Made only once there is something to pull (it needs Google credentials or the emulator).
            try:
                self._client = await self._subscriber_factory()
            except Exception as exc:  # noqa: BLE001 - e.g. no credentials: say so, try again later
                log.error("cannot create the Pub/Sub client", extra={"error": repr(exc)})
                return
        for subscription, owner in wanted.items():
            if subscription not in self._retired:
                log.info("ingest starts pulling a subscription", extra={"subscription": subscription})
                self._spawn(subscription, owner)
        for subscription in [s for s in self._retired if s not in wanted and s not in self.subscriptions]:
            log.info("ingest stops pulling a subscription", extra={"subscription": subscription})
            self._retired.pop(subscription).set()  # its loops end after the batch they hold
            self.health.forget(subscription)
        self._tasks = [task for task in self._tasks if not task.done()]

    async def _watch_sources(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self.sources_refresh_seconds)
            except TimeoutError:
                await self._refresh_sources()

    async def stop(self) -> None:
        """Finish in-flight batches (a pull waits at most `pull_timeout`), then close."""
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        if tasks:
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                    log.error("ingest puller ended with an error", exc_info=result)
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> "PullIngestor":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # --- the loop --------------------------------------------------------------

    async def _run(self, subscription: str, retired: asyncio.Event | None = None) -> None:
        max_messages = self.batch_size
        backoff = self.backoff_initial
        retired = retired or asyncio.Event()
        while not self._stopping.is_set() and not retired.is_set():
            sent_at = time.monotonic()
            try:
                response = await self._client.pull(subscription, max_messages, self.pull_timeout)
            except google_exceptions.DeadlineExceeded:
                await self.health.record_unanswered(subscription)  # quiet, or a slow answer
                continue  # nothing arrived within pull_timeout
            except Exception as exc:  # noqa: BLE001 - Pub/Sub trouble must not end the puller
                self.stats.pull_failures += 1
                self._consecutive_failures += 1
                metrics.PULL_FAILURES.inc()
                log.warning("pull failed; backing off", extra={"subscription": subscription, "error": repr(exc)})
                await self.health.record(subscription, exc)  # visible to its tenant and the operator
                await self._sleep(backoff)
                backoff = self._next_backoff(backoff)
                continue
            pulled_at = time.time()  # wall clock, as Pub/Sub's publish times are
            await self.health.record(subscription, None, sent_at=sent_at)
            received_messages = response.received_messages
            if not received_messages:
                await self._sleep(self.idle_seconds)
                continue
            batch, ack_ids, total_bytes = self._take(received_messages, pulled_at)
            del response, received_messages
            max_messages = self._next_pull_size(max_messages, len(batch), total_bytes)
            metrics.BATCH_SIZE.observe(len(batch))
            self.stats.received += len(batch)
            write_started = time.perf_counter()
            try:
                await record_batch(
                    self.sessionmaker,
                    batch,
                    source=subscription,
                    source_label="pull",
                    stats=self.stats,
                    timeout=self.write_timeout,
                    clock=self.clock,
                    on_marked_due=self.on_marked_due,
                )
            except Exception as exc:  # noqa: BLE001 - DB down or any write failure: never ack
                self.stats.write_failures += 1
                self._consecutive_failures += 1
                metrics.WRITE_FAILURES.labels("pull").inc()
                log.warning(
                    "ingest write failed; batch not acknowledged, backing off",
                    extra={"subscription": subscription, "messages": len(batch), "error": repr(exc)},
                )
                await self._modify_deadline(subscription, ack_ids, 0)
                await self._sleep(backoff)
                backoff = self._next_backoff(backoff)
                continue
            stages.observe(stages.PULLED_TO_RECORDED, time.perf_counter() - write_started)
            self._consecutive_failures = 0
            backoff = self.backoff_initial
            await self._acknowledge(subscription, ack_ids)

    def _take(self, received_messages, pulled_at: float) -> tuple[list[Received], list[str], int]:
        batch: list[Received] = []
        ack_ids: list[str] = []
        total = 0
        for item in received_messages:
            message = item.message
            published = message.publish_time
            if published.seconds:
                stages.observe(stages.PUBLISHED_TO_PULLED, pulled_at - published.seconds - published.nanos / 1e9)
            data = message.data
            total += len(data)
            # Anything longer is malformed; one byte over the limit is enough
            # for the decoder to say so, and the rest is not kept around.
            data = bytes(data[: MAX_DATA_BYTES + 1])
            batch.append(Received(message_id=message.message_id or None, data=data,
                                  attributes=attributes_of(message.attributes)))
            ack_ids.append(item.ack_id)
        return batch, ack_ids, total

    def _next_pull_size(self, current: int, count: int, total_bytes: int) -> int:
        if total_bytes > self.max_batch_bytes and count:
            per_message = total_bytes / count
            return max(1, min(self.batch_size, int(self.max_batch_bytes / per_message)))
        return min(self.batch_size, current * 2)

    def _next_backoff(self, current: float) -> float:
        return min(self.backoff_max, current * 2)

    async def _sleep(self, seconds: float) -> None:
        """Sleep with full jitter; wake early when stop() is called."""
        if seconds <= 0:
            return
        delay = random.uniform(seconds / 2, seconds)
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            pass

    async def _acknowledge(self, subscription: str, ack_ids: list[str]) -> None:
        for start in range(0, len(ack_ids), ACK_CHUNK):
            chunk = ack_ids[start:start + ACK_CHUNK]
            try:
                await self._client.acknowledge(subscription, chunk, timeout=30)
                self.stats.acked += len(chunk)
            except Exception as exc:  # noqa: BLE001 - redelivery is harmless: the write is idempotent
                self.stats.ack_failures += 1
                metrics.ACK_FAILURES.labels("ack").inc()
                log.warning("acknowledge failed; messages will be redelivered",
                            extra={"subscription": subscription, "error": repr(exc)})

    async def _modify_deadline(self, subscription: str, ack_ids: list[str], seconds: int) -> None:
        for start in range(0, len(ack_ids), ACK_CHUNK):
            chunk = ack_ids[start:start + ACK_CHUNK]
            try:
                await self._client.modify_ack_deadline(subscription, chunk, seconds, timeout=30)
                self.stats.nacked += len(chunk)
            except Exception as exc:  # noqa: BLE001 - the ack deadline lapses instead
                self.stats.ack_failures += 1
                metrics.ACK_FAILURES.labels("nack").inc()
                log.warning("nack failed; messages return after their ack deadline",
                            extra={"subscription": subscription, "error": repr(exc)})
