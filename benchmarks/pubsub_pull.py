"""Streaming pull vs synchronous batched pull against the Pub/Sub emulator.

Starts its own emulator (`mailwatch_devstack.pubsub_emulator.PubSubEmulator`),
publishes N small Gmail-shaped notifications for each mode on a fresh
subscription, and measures how fast each mode drains them:

- streaming: `SubscriberClient.subscribe` with flow control, one `message.ack()`
  per message in the callback (the client batches acks on its own dispatcher);
- batched: `pull(max_messages=1000)` then one `acknowledge` with every ack id
  of that pull, in a loop.

Only receive + ack is timed for those two (no database), since that is the
part the two modes differ in; ingest's own choice is explained in
`mailwatch.ingest.pull`. With `--ingest`, a third run drives the real
`PullIngestor` (pull + one-statement Postgres write + batched ack) against a
throwaway Postgres with 500 registered mailboxes.

    /work/venv/bin/python benchmarks/pubsub_pull.py [--messages 20000] [--ingest]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from concurrent import futures

from mailwatch_devstack.pubsub_emulator import PubSubEmulator

PROJECT = "mailwatch-bench"


def _payload(i: int) -> bytes:
    return json.dumps({"emailAddress": f"user{i % 500}@example.com", "historyId": str(100000 + i)}).encode()


def _create(publisher, subscriber, ack_deadline: int = 60) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    topic = publisher.topic_path(PROJECT, f"bench-{suffix}")
    subscription = subscriber.subscription_path(PROJECT, f"bench-{suffix}")
    publisher.create_topic(request={"name": topic})
    subscriber.create_subscription(
        request={"name": subscription, "topic": topic, "ack_deadline_seconds": ack_deadline}
    )
    return topic, subscription


def _publish(publisher, topic: str, count: int) -> float:
    started = time.perf_counter()
    pending = [publisher.publish(topic, _payload(i)) for i in range(count)]
    futures.wait(pending)
    for future in pending:
        future.result()
    return count / (time.perf_counter() - started)


def _streaming(subscriber, subscription: str, count: int, timeout: float) -> float:
    from google.cloud.pubsub_v1.types import FlowControl

    received = 0
    done = threading.Event()
    lock = threading.Lock()

    def callback(message) -> None:
        nonlocal received
        message.ack()
        with lock:
            received += 1
            if received >= count:
                done.set()

    started = time.perf_counter()
    streaming = subscriber.subscribe(
        subscription, callback, flow_control=FlowControl(max_messages=1000, max_bytes=10 * 1024 * 1024)
    )
    finished = done.wait(timeout)
    elapsed = time.perf_counter() - started
    streaming.cancel()
    try:
        streaming.result(timeout=30)
    except futures.CancelledError:
        pass
    if not finished:
        print(f"  streaming: only {received}/{count} after {timeout:.0f}s")
    return received / elapsed


def _batched(subscriber, subscription: str, count: int, timeout: float) -> float:
    received = 0
    started = time.perf_counter()
    deadline = started + timeout
    while received < count and time.perf_counter() < deadline:
        response = subscriber.pull(request={"subscription": subscription, "max_messages": 1000}, timeout=10)
        if not response.received_messages:
            continue
        subscriber.acknowledge(
            request={"subscription": subscription, "ack_ids": [m.ack_id for m in response.received_messages]}
        )
        received += len(response.received_messages)
    return received / (time.perf_counter() - started)


def _ingest(publisher, subscriber, count: int, timeout: float, concurrency: int) -> float:
    import asyncio

    from sqlalchemy import insert

    from mailwatch_devstack.postgres import TemporaryPostgres
    from mailwatch.ingest import PullIngestor
    from mailwatch.store import create_engine, session_factory
    from mailwatch.store.migrate import upgrade
    from mailwatch.store.models import mailboxes, sealed_credentials, tenants

    topic, subscription = _create(publisher, subscriber)
    with TemporaryPostgres() as postgres:
        url = postgres.url("postgres")
        upgrade(url)

        async def run() -> float:
            engine = create_engine(url)
            try:
                sessions = session_factory(engine)
                async with sessions() as session, session.begin():
                    tenant = (await session.execute(insert(tenants).values(name="bench").returning(tenants.c.id))).scalar_one()
                    sealed = (await session.execute(insert(sealed_credentials).values(
                        tenant_id=tenant, kind="OAUTH", digest=b"bench", ciphertext=b"x",
                    ).returning(sealed_credentials.c.id))).scalar_one()
                    await session.execute(insert(mailboxes), [
                        {"tenant_id": tenant, "email_address": f"user{i}@example.com",
                         "gmail_address": f"user{i}@example.com", "credential_kind": "OAUTH",
                         "sealed_credential_id": sealed, "history_id": 1} for i in range(500)
                    ])
                rate = _publish(publisher, topic, count)
                print(f"published {count} messages at {rate:,.0f} msg/s")
                ingestor = PullIngestor(sessions, [subscription], pull_timeout=2.0, idle_seconds=0.01,
                                        concurrency=concurrency)
                started = time.perf_counter()
                await ingestor.start()
                try:
                    while ingestor.stats.acked < count and time.perf_counter() - started < timeout:
                        await asyncio.sleep(0.01)
                finally:
                    elapsed = time.perf_counter() - started
                    await ingestor.stop()
                from prometheus_client import REGISTRY

                write_seconds = REGISTRY.get_sample_value("mailwatch_ingest_batch_write_seconds_sum", {"source": "pull"})
                print(f"  ingest: {ingestor.stats.batches} batches, {ingestor.stats.accepted} accepted, "
                      f"{write_seconds / max(1, ingestor.stats.batches) * 1000:.1f} ms per batch write")
                return ingestor.stats.acked / elapsed
            finally:
                await engine.dispose()

        return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--ingest", action="store_true", help="also time PullIngestor end to end with Postgres")
    parser.add_argument("--concurrency", type=int, default=1, help="PullIngestor pullers (batches in flight)")
    args = parser.parse_args()

    with PubSubEmulator() as emulator:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000, max_latency=0.01)
        )
        subscriber = pubsub_v1.SubscriberClient()
        try:
            with subscriber:
                results = {}
                for mode, drain in (("streaming pull, ack per message", _streaming),
                                    ("pull(max_messages=1000) + batched acknowledge", _batched)):
                    topic, subscription = _create(publisher, subscriber)
                    rate = _publish(publisher, topic, args.messages)
                    print(f"published {args.messages} messages at {rate:,.0f} msg/s")
                    results[mode] = drain(subscriber, subscription, args.messages, args.timeout)
                    print(f"{mode}: {results[mode]:,.0f} msg/s")
                if args.ingest:
                    rate = _ingest(publisher, subscriber, args.messages, args.timeout, args.concurrency)
                    print(f"PullIngestor x{args.concurrency} (pull + Postgres write + batched ack): {rate:,.0f} msg/s")
        finally:
            publisher.stop()
            publisher.api.transport.close()


if __name__ == "__main__":
    main()
