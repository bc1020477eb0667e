"""Receiving from Pub/Sub, by CPU per message: ingest's unary Pull + Acknowledge vs a StreamingPull stream.

Starts its own emulator and, for each way, a consumer in a child process of its own (so the
CPU it reports is receiving and acking only; the publisher is this process), on
`mailwatch.ingest.subscriber.Subscriber` (ingest's unary calls), with no database:

- unary: `concurrency` loops of `Pull(max_messages=1000)` then one `Acknowledge` of that
  batch, as ingest does;
- stream: one StreamingPull stream on a channel of its own, each response's ack ids written
  back on it as one request; a full response (a backlog: the emulator sends at most 100
  messages a response, about 20 responses a second per stream) starts `concurrency - 1` unary
  drain loops beside it, each stopping at its first pull under 50 messages.

Each round runs both ways, on fresh subscriptions, back to back:

- paced: `--rate` messages/s published one at a time (as Gmail does) for `--paced` messages;
  the consumer's CPU from the first publish to the last ack, divided by the messages;
- bulk: `--bulk` messages published first, then drained as fast as possible: messages/s.

    .venv/bin/python benchmarks/pubsub_stream.py [--paced 3000] [--rate 100] [--bulk 20000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent import futures

PROJECT = "mailwatch-bench"
MODES = ("unary", "stream")


def _payload(i: int) -> bytes:
    return json.dumps({"emailAddress": f"user{i % 150}@example.com", "historyId": str(100000 + i)}).encode()


# --- the consumer (child process) ----------------------------------------------------------


class _Consumer:
    """Counts what it receives (and each message's publish -> receipt time) until `count`."""

    def __init__(self, client, subscription: str, count: int) -> None:
        self.client = client
        self.subscription = subscription
        self.count = count
        self.received = self.batches = 0
        self.latencies: list[float] = []
        self.done = asyncio.Event()

    def took(self, messages) -> list[str]:
        """The batch's ack ids, once counted."""
        now = time.time()
        for item in messages:
            published = item.message.publish_time
            self.latencies.append(now - published.seconds - published.nanos / 1e9)
        self.received += len(messages)
        self.batches += 1
        if self.received >= self.count and not self.done.is_set():
            # Measured to here: a drain pull still waiting for more is not part of the drain.
            self.cpu = time.process_time() - _started["cpu"]
            self.wall = time.perf_counter() - _started["wall"]
            self.done.set()
        return [item.ack_id for item in messages]

    async def pulls(self, *, drain: bool) -> None:
        """Pull + Acknowledge as ingest's unary loop did (idle 0.2 s after an empty answer); with
        `drain`, only while pulls come back with DRAIN_BELOW messages or more."""
        from google.api_core import exceptions

        while not self.done.is_set():
            try:
                response = await self.client.pull(self.subscription, 1000, 10.0)
            except exceptions.DeadlineExceeded:
                if drain:
                    return
                continue
            messages = response.received_messages
            if messages:
                await self.client.acknowledge(self.subscription, self.took(messages), timeout=30)
            if drain and len(messages) < DRAIN_BELOW:
                return
            if not messages:
                await asyncio.sleep(0.2)

    async def stream(self, concurrency: int) -> None:
        """One stream, acks written on it; a full response starts `concurrency - 1` drain pullers."""
        import grpc
        from google.api_core.gapic_v1 import routing_header
        from google.pubsub_v1.types import pubsub

        request = pubsub.StreamingPullRequest.pb()
        response = pubsub.StreamingPullResponse.pb()
        channel = grpc.aio.insecure_channel(os.environ["PUBSUB_EMULATOR_HOST"])
        call = channel.stream_stream(
            "/google.pubsub.v1.Subscriber/StreamingPull", request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )(metadata=(routing_header.to_grpc_metadata((("subscription", self.subscription),)),))
        await call.write(request(subscription=self.subscription, stream_ack_deadline_seconds=60,
                                 max_outstanding_messages=1000, max_outstanding_bytes=10 * 1024 * 1024,
                                 client_id=uuid.uuid4().hex))
        drains: list[asyncio.Task] = []
        try:
            while not self.done.is_set():
                messages = (await call.read()).received_messages
                if len(messages) >= DRAIN_AT and all(task.done() for task in drains):
                    drains = [asyncio.create_task(self.pulls(drain=True)) for _ in range(concurrency - 1)]
                await call.write(request(ack_ids=self.took(messages)))
        finally:
            await asyncio.gather(*drains, return_exceptions=True)
            await call.done_writing()
            await channel.close()


async def _consume(mode: str, subscription: str, count: int, concurrency: int) -> _Consumer:
    from mailwatch.ingest.subscriber import connect

    consumer = _Consumer(await connect(), subscription, count)
    _ready()
    if mode == "unary":
        tasks = [asyncio.create_task(consumer.pulls(drain=False)) for _ in range(concurrency)]
    else:
        tasks = [asyncio.create_task(consumer.stream(concurrency))]
    await consumer.done.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await consumer.client.close()
    return consumer


DRAIN_AT = 100  # a stream response this full means a backlog
DRAIN_BELOW = 50


_started: dict[str, float] = {}


def _ready() -> None:
    """Connected: the measured part starts now (the publisher waits for this line)."""
    _started.update(cpu=time.process_time(), wall=time.perf_counter())
    print("ready", flush=True)


def _child(mode: str, subscription: str, count: int, concurrency: int) -> None:
    import grpc  # noqa: F401 - imported before the measured part
    import uvloop
    from google.pubsub_v1.types import pubsub  # noqa: F401

    from mailwatch.ingest import subscriber  # noqa: F401

    async def main() -> None:
        consumer = await _consume(mode, subscription, count, concurrency)
        latencies = sorted(consumer.latencies)
        print(json.dumps({"received": consumer.received, "batches": consumer.batches,
                          "p50": latencies[len(latencies) // 2], "p99": latencies[int(len(latencies) * 0.99)],
                          "cpu": consumer.cpu, "wall": consumer.wall}), flush=True)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


# --- the driver ------------------------------------------------------------------------------


def _create(publisher, subscriber) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    topic = publisher.topic_path(PROJECT, f"bench-{suffix}")
    subscription = subscriber.subscription_path(PROJECT, f"bench-{suffix}")
    publisher.create_topic(request={"name": topic})
    subscriber.create_subscription(request={"name": subscription, "topic": topic, "ack_deadline_seconds": 60})
    return topic, subscription


def _start_consumer(mode: str, subscription: str, count: int, concurrency: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, subscription, str(count), str(concurrency)],
        stdout=subprocess.PIPE, text=True,
    )
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise RuntimeError(f"the {mode} consumer did not start")
    return process


def _result(process: subprocess.Popen, timeout: float) -> dict:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    if process.returncode:
        raise RuntimeError(f"consumer exited {process.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def _paced(publisher, subscriber, mode: str, count: int, rate: float, concurrency: int) -> dict:
    topic, subscription = _create(publisher, subscriber)
    process = _start_consumer(mode, subscription, count, concurrency)
    started = time.perf_counter()
    pending = []
    for i in range(count):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        pending.append(publisher.publish(topic, _payload(i)))
    futures.wait(pending)
    return _result(process, timeout=120)


def _bulk(publisher, subscriber, mode: str, count: int, concurrency: int) -> dict:
    topic, subscription = _create(publisher, subscriber)
    pending = [publisher.publish(topic, _payload(i)) for i in range(count)]
    futures.wait(pending)
    process = _start_consumer(mode, subscription, count, concurrency)
    return _result(process, timeout=300)


def _per_message(results: dict, mode: str) -> float:
    return results[mode]["cpu"] / results[mode]["received"]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, mode, subscription, count, concurrency = sys.argv
        _child(mode, subscription, int(count), int(concurrency))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paced", type=int, default=3000, help="messages in the paced run (0: none)")
    parser.add_argument("--rate", type=float, default=100.0, help="paced publishing rate, messages/s")
    parser.add_argument("--bulk", type=int, default=20000, help="messages in the bulk run (0: none)")
    parser.add_argument("--concurrency", type=int, default=4, help="unary pull loops; the stream's "
                        "max_outstanding_messages is 1000 x this")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both ways")
    args = parser.parse_args()

    from mailwatch_devstack.pubsub_emulator import PubSubEmulator

    with PubSubEmulator() as emulator:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000, max_latency=0.005))
        subscriber = pubsub_v1.SubscriberClient()
        try:
            for round_ in range(1, args.rounds + 1):
                print(f"round {round_} (load average {os.getloadavg()[0]:.1f})")
                if args.paced:
                    paced = {mode: _paced(publisher, subscriber, mode, args.paced, args.rate, args.concurrency)
                             for mode in MODES}
                    print("  paced {} msgs at {:.0f}/s, CPU per message: ".format(args.paced, args.rate) + ", ".join(
                        f"{mode} {paced[mode]['cpu'] / paced[mode]['received'] * 1e3:.3f} ms "
                        f"({paced[mode]['received'] / paced[mode]['batches']:.1f}/batch, publish->received p50 "
                        f"{paced[mode]['p50'] * 1e3:.0f} p99 {paced[mode]['p99'] * 1e3:.0f} ms)" for mode in MODES)
                        + "  (stream/unary per message {:.2f})".format(
                            _per_message(paced, "stream") / _per_message(paced, "unary")))
                if args.bulk:
                    bulk = {mode: _bulk(publisher, subscriber, mode, args.bulk, args.concurrency) for mode in MODES}
                    print("  bulk {} msgs: ".format(args.bulk) + ", ".join(
                        f"{mode} {bulk[mode]['received'] / bulk[mode]['wall']:,.0f} msg/s "
                        f"({bulk[mode]['cpu'] / bulk[mode]['received'] * 1e3:.3f} ms CPU/msg, "
                        f"{bulk[mode]['received'] / bulk[mode]['batches']:.0f}/batch)" for mode in MODES)
                        + f"  (stream/unary rate {bulk['unary']['wall'] / bulk['stream']['wall']:.2f})")
        finally:
            subscriber.close()
            publisher.stop()
            publisher.api.transport.close()


if __name__ == "__main__":
    main()
