"""Many concurrent StreamChanges streams, and one stream draining a backlog, each next to raw grpc.aio.

Starts its own peers and stops each by its pid on exit: a throwaway Postgres
(migrated) and `mailwatch serve` as a child process (ingest, sync, renew and
poll off: changes are appended to the change log by this process, exactly as
a sync worker appends them, so only the change log → stream path is measured).
Also a *raw peer*: a bare grpc.aio server (this file with `--raw-server`, its
own child process) that sends the same protobuf messages from memory, with
no database, no authentication, no filters: the floor grpc.aio itself sets
on this machine. Both servers are measured by the same client code in this
process, in the same run, and the ratio is printed. The raw peer runs on the
event loop the service does (`--event-loop`, default the service's default),
so the ratio compares mailwatch's work, not two loops.

1. fan-out: `--streams` streams (START_POSITION_NOW, one tenant) open on the
   service; then `--changes` single changes, one every `--spacing` seconds.
   Latency = arrival on a stream - the change's commit returning (every
   stream, every change). Postgres reads per change: the service's own
   counters (`mailwatch_stream_reads_total` + `mailwatch_stream_feed_reads_total`
   on /metrics) over the phase, divided by the changes. Raw peer: as many
   streams on the raw server, which puts each change (one pre-built
   ChangeEvent) on every stream's queue when told to.
2. backlog: `--backlog` changes appended first, then one stream
   (START_POSITION_EARLIEST, max_batch_size 1000) reads them all; events/s.
   Repeated `--rounds` times (each later round reads a fresh backlog from the
   cursor before it), each next to a raw drain; the median ratio is printed.
   Raw peer: the raw server sends as many pre-built events, one per message
   (what a stream without batching would do), as fast as grpc.aio goes.

    .venv/bin/python benchmarks/fanout.py [--streams 1000] [--changes 30] [--spacing 0.2] [--backlog 10000] [--rounds 3]
        [--profile DIR] [--event-loop uvloop|asyncio]

`--streams 0` skips the fan-out phase, `--rounds 0` the backlog phase. `--profile DIR` samples the service
with py-spy over the fan-out's changes (`DIR/fanout.txt`, collapsed stacks of
the GIL holder, as `pipeline.py --profile` writes them); a profiled run's
figures are not comparable with an unprofiled one's. Each phase also prints the CPU
seconds the service process and the raw server used (from /proc): on a
shared machine that, and the ratio to the raw peer in the same run, are the
figures to compare; wall-clock rates move with everyone else's load.

Every process shares this machine's cores (the load average is printed): the
figures are for the whole stack on one host, client included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))

from pipeline import NO_TENANT_LIMITS, Profiler, _load, percentile  # noqa: E402 - the pipeline benchmark's measuring helpers
from mailwatch import event_loop  # noqa: E402
from mailwatch.config import EVENT_LOOPS  # noqa: E402
from tests.fixtures.factory import tenant_key_at  # noqa: E402 - pipeline put the repository root on sys.path
from tests.fixtures.processes import Child, child_env  # noqa: E402

OPERATOR_TOKEN = "fanout-operator-token"
SERVICE = "mailwatch.v1.MailboxService"


# --- the raw peer -----------------------------------------------------------------------------------


def _sample_event(sequence: int):
    from google.protobuf import timestamp_pb2

    from mailwatch.api.tokens import encode_cursor
    from mailwatch.v1 import resources_pb2

    now = time.time()
    return resources_pb2.ChangeEvent(
        id=str(uuid.uuid4()), cursor=encode_cursor(sequence), type=resources_pb2.EVENT_TYPE_MESSAGE_ADDED,
        mailbox_id=str(uuid.uuid4()), email_address="user0001@bench.test",
        observe_time=timestamp_pb2.Timestamp(seconds=int(now), nanos=int(now % 1 * 1e9)),
        history_id=100000 + sequence, message_id=f"{sequence:016x}", thread_id=f"{sequence:016x}",
        label_ids=["INBOX", "UNREAD"],
    )


async def raw_server(port_file: str) -> None:
    """StreamChanges on a bare grpc.aio server: the request's max_batch_size says the mode.

    max_batch_size 1: send --backlog pre-built events, one per message, then
    end. Otherwise: register the stream; every event posted to the `Publish`
    method (a unary call on the same service name, raw bytes) is put on every
    registered stream's queue.
    """
    import grpc

    from mailwatch.v1 import mailbox_service_pb2

    queues: set[asyncio.Queue] = set()
    backlog = [mailbox_service_pb2.StreamChangesResponse(events=[_sample_event(i)]) for i in range(1, 10_001)]

    async def stream_changes(request, context):
        if request.max_batch_size == 1:
            for response in backlog:
                yield response
            return
        queue: asyncio.Queue = asyncio.Queue()
        queues.add(queue)
        try:
            yield mailbox_service_pb2.StreamChangesResponse(heartbeat=mailbox_service_pb2.Heartbeat())
            while True:
                yield await queue.get()
        finally:
            queues.discard(queue)

    async def publish(request: bytes, context) -> bytes:
        response = mailbox_service_pb2.StreamChangesResponse.FromString(request)
        for queue in queues:
            queue.put_nowait(response)
        return str(len(queues)).encode()

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "StreamChanges": grpc.unary_stream_rpc_method_handler(
            stream_changes,
            request_deserializer=mailbox_service_pb2.StreamChangesRequest.FromString,
            response_serializer=mailbox_service_pb2.StreamChangesResponse.SerializeToString,
        ),
        "Publish": grpc.unary_unary_rpc_method_handler(publish),
    })
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 100_000)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    Path(port_file).write_text(str(port))
    print(f"raw server on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


# --- measuring ----------------------------------------------------------------------------------------


class Streams:
    """N streams on one channel; remembers when each event (by message id) reached each stream."""

    def __init__(self, stub, count: int, metadata) -> None:
        self.stub, self.count, self.metadata = stub, count, metadata
        self.arrivals: dict[str, list[float]] = {}
        self._opened = 0
        self._all_open = asyncio.Event()
        self._waiters: dict[str, tuple[int, asyncio.Event]] = {}
        self.calls = []
        self.tasks = []

    async def open(self, request) -> None:
        for _ in range(self.count):
            call = self.stub.StreamChanges(request, metadata=self.metadata)
            self.calls.append(call)
            self.tasks.append(asyncio.create_task(self._read(call)))
        await asyncio.wait_for(self._all_open.wait(), 300)

    async def _read(self, call) -> None:
        first = True
        async for response in call:
            now = time.perf_counter()
            if first:
                first = False
                self._opened += 1
                if self._opened == self.count:
                    self._all_open.set()
            for event in response.events:
                arrivals = self.arrivals.setdefault(event.message_id, [])
                arrivals.append(now)
                waiter = self._waiters.get(event.message_id)
                if waiter is not None and len(arrivals) >= waiter[0]:
                    waiter[1].set()

    async def wait_all(self, message_id: str, timeout: float = 60.0) -> None:
        if len(self.arrivals.get(message_id, ())) >= self.count:
            return
        done = asyncio.Event()
        self._waiters[message_id] = (self.count, done)
        try:
            await asyncio.wait_for(done.wait(), timeout)
        finally:
            self._waiters.pop(message_id, None)

    async def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _summary(latencies: list[float]) -> str:
    if not latencies:
        return "no samples"
    return (f"p50 {percentile(latencies, 50) * 1000:.0f} ms, p99 {percentile(latencies, 99) * 1000:.0f} ms "
            f"(mean {statistics.fmean(latencies) * 1000:.0f} ms, n={len(latencies)})")


def _metric(url: str, *names: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name in names)


READ_METRICS = ("mailwatch_stream_reads_total", "mailwatch_stream_feed_reads_total")


async def fanout_service(args, target, metadata, append_one, metrics_url, service: Child) -> tuple[list[float], float, float]:
    """Latencies, Postgres reads per change, and the service's CPU seconds over the changes (streams already open)."""
    import grpc

    from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc

    options = [("grpc.max_concurrent_streams", 100_000)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        streams = Streams(mailbox_service_pb2_grpc.MailboxServiceStub(channel), args.streams, metadata)
        started = time.perf_counter()
        await streams.open(mailbox_service_pb2.StreamChangesRequest(
            start_position=mailbox_service_pb2.START_POSITION_NOW))
        print(f"    {args.streams} streams open in {time.perf_counter() - started:.1f}s", flush=True)
        await asyncio.sleep(1.0)
        reads_before = _metric(metrics_url, *READ_METRICS)
        profiler = Profiler(args.profile, service.pid)
        profiler.start("fanout")
        cpu_before = service.cpu_seconds()
        latencies = []
        try:
            for i in range(args.changes):
                message_id = f"fanout-{i}"
                committed = await append_one(message_id)
                await streams.wait_all(message_id)
                latencies += [t - committed for t in streams.arrivals[message_id]]
                await asyncio.sleep(args.spacing)
            cpu = service.cpu_seconds() - cpu_before
        finally:
            profiled = profiler.stop()
            await streams.close()
        if profiled:
            print(f"    {profiled}", flush=True)
        reads = _metric(metrics_url, *READ_METRICS) - reads_before
    return latencies, reads / args.changes, cpu


async def fanout_raw(args, raw_target, raw_child: Child) -> tuple[list[float], float]:
    import grpc

    from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc

    options = [("grpc.max_concurrent_streams", 100_000)]
    async with grpc.aio.insecure_channel(raw_target, options=options) as channel:
        streams = Streams(mailbox_service_pb2_grpc.MailboxServiceStub(channel), args.streams, ())
        await streams.open(mailbox_service_pb2.StreamChangesRequest())
        publish = channel.unary_unary(f"/{SERVICE}/Publish")
        await asyncio.sleep(1.0)
        cpu_before = raw_child.cpu_seconds()
        latencies = []
        try:
            for i in range(args.changes):
                event = _sample_event(i + 1)
                event.message_id = f"raw-{i}"
                payload = mailbox_service_pb2.StreamChangesResponse(events=[event]).SerializeToString()
                sent = time.perf_counter()
                await publish(payload)
                await streams.wait_all(event.message_id)
                latencies += [t - sent for t in streams.arrivals[event.message_id]]
                await asyncio.sleep(args.spacing)
            cpu = raw_child.cpu_seconds() - cpu_before
        finally:
            await streams.close()
    return latencies, cpu


async def fanout_phase(args, target, raw_target, metadata, append_one, metrics_url, service: Child,
                       raw_child: Child) -> None:
    print(f"[1] fan-out: {args.streams} streams, {args.changes} single changes every {args.spacing}s "
          f"(load average {_load()})", flush=True)
    latencies, reads_per_change, service_cpu = await fanout_service(
        args, target, metadata, append_one, metrics_url, service)
    raw, raw_cpu = await fanout_raw(args, raw_target, raw_child)
    p99, raw_p99 = percentile(latencies, 99), percentile(raw, 99)
    # CPU over the changes only (the streams are open by then), both sides.
    print(f"    mailwatch: commit -> on every stream: {_summary(latencies)}; "
          f"Postgres reads per change {reads_per_change:.2f}; "
          f"service CPU {_cpu_per(service_cpu, args.changes, 1) * 1000:.2f} ms per change")
    print(f"    raw grpc.aio (queue put -> on every stream): {_summary(raw)}; "
          f"raw server CPU {_cpu_per(raw_cpu, args.changes, 1) * 1000:.2f} ms per change")
    print(f"    p99 mailwatch / raw: {p99 * 1000:.0f} / {raw_p99 * 1000:.0f} ms = {p99 / raw_p99:.1f}x "
          f"(load average {_load()})", flush=True)


async def _current_cursor(target: str, metadata) -> bytes:
    """The tenant's current position: the cursor of a START_NOW stream's opening heartbeat."""
    import grpc

    from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        call = mailbox_service_pb2_grpc.MailboxServiceStub(channel).StreamChanges(
            mailbox_service_pb2.StreamChangesRequest(start_position=mailbox_service_pb2.START_POSITION_NOW),
            metadata=metadata)
        response = await call.read()
        call.cancel()
    return response.heartbeat.cursor


async def drain(stub, request, metadata, expected: int) -> float:
    """events/s reading `expected` events from one stream."""
    got = 0
    started = time.perf_counter()
    call = stub.StreamChanges(request, metadata=metadata)
    async for response in call:
        got += len(response.events)
        if got >= expected:
            break
    elapsed = time.perf_counter() - started
    call.cancel()
    return expected / elapsed


# --- orchestration -------------------------------------------------------------------------------------


def _cpu_per(seconds: float, units: float, per: float) -> float:
    return seconds / units * per if units else float("nan")


async def run(args, *, target: str, raw_target: str, database_url: str, metrics_url: str,
              service: Child, raw: Child) -> None:
    import grpc

    from mailwatch.domain.models import CredentialKind, EventType, LabelFilter, NewEvent
    from mailwatch.secrets import SealedSecret
    from mailwatch.store import changes, create_engine, mailboxes, sealed_credentials, session_factory
    from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc

    tenant = await tenant_key_at(target, "fanout", operator_token=OPERATOR_TOKEN)
    metadata = tenant.auth
    tenant_id = uuid.UUID(tenant.tenant_id)

    engine = create_engine(database_url, pool_size=2)
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        never_used = SealedSecret(CredentialKind.OAUTH, b"benchmark", b"benchmark: never used")
        sealed = await sealed_credentials.put_secrets(session, tenant_id, [never_used])
        mailbox, _ = await mailboxes.upsert_mailbox(
            session, tenant_id, email_address="user0001@bench.test", label_filter=LabelFilter(),
            credential_kind=CredentialKind.OAUTH, sealed_credential_id=sealed[never_used.digest],
        )

    def new_event(message_id: str) -> NewEvent:
        return NewEvent(mailbox_id=mailbox.id, email_address=mailbox.email_address, type=EventType.MESSAGE_ADDED,
                        history_id=1, message_id=message_id, thread_id=message_id, label_ids=("INBOX", "UNREAD"))

    async def append_one(message_id: str) -> float:
        async with sessions() as session, session.begin():
            await changes.append_events(session, tenant_id, [new_event(message_id)])
        return time.perf_counter()  # committed

    try:
        if args.streams > 0:
            await fanout_phase(args, target, raw_target, metadata, append_one, metrics_url, service, raw)

        if args.rounds == 0:
            return
        print(f"[2] backlog: {args.backlog} changes, one stream from the earliest (load average {_load()})",
              flush=True)
        async def append_backlog(round_number: int) -> None:
            for offset in range(0, args.backlog, 5000):
                async with sessions() as session, session.begin():
                    await changes.append_events(session, tenant_id, [
                        new_event(f"backlog-{round_number}-{i}")
                        for i in range(offset, min(args.backlog, offset + 5000))])

        await append_backlog(1)
        ratios = []
        for round_number in range(1, args.rounds + 1):
            if round_number == 1:
                expected = args.backlog + (args.changes if args.streams > 0 else 0)
                start = mailbox_service_pb2.StreamChangesRequest(
                    start_position=mailbox_service_pb2.START_POSITION_EARLIEST, max_batch_size=1000)
            else:
                # A fresh backlog each round, read from the cursor before it: nothing
                # the service converted in an earlier round is reused.
                expected = args.backlog
                start = mailbox_service_pb2.StreamChangesRequest(
                    cursor=await _current_cursor(target, metadata), max_batch_size=1000)
                await append_backlog(round_number)
            # Back to back, alternating: both see the same machine (other load comes and goes).
            service_cpu = service.cpu_seconds()
            async with grpc.aio.insecure_channel(target) as channel:
                stub = mailbox_service_pb2_grpc.MailboxServiceStub(channel)
                ours = await drain(stub, start, metadata, expected)
            service_cpu = service.cpu_seconds() - service_cpu
            raw_cpu = raw.cpu_seconds()
            async with grpc.aio.insecure_channel(raw_target) as channel:
                stub = mailbox_service_pb2_grpc.MailboxServiceStub(channel)
                raw_rate = await drain(stub, mailbox_service_pb2.StreamChangesRequest(max_batch_size=1), (), 10_000)
            raw_cpu = raw.cpu_seconds() - raw_cpu
            ratios.append(ours / raw_rate)
            print(f"    round {round_number}: mailwatch (batches of up to 1000): {ours:,.0f} events/s, "
                  f"service CPU {_cpu_per(service_cpu, expected, 10_000):.2f} s per 10k events; "
                  f"raw grpc.aio, one event per message: {raw_rate:,.0f} events/s, "
                  f"raw server CPU {_cpu_per(raw_cpu, 10_000, 10_000):.2f} s per 10k; "
                  f"ratio {ours / raw_rate:.2f} (load average {_load()})", flush=True)
        print(f"    ratio mailwatch / raw, median of {len(ratios)}: {statistics.median(ratios):.2f}", flush=True)
    finally:
        await engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--spacing", type=float, default=0.2, help="seconds between two changes (default 0.2)")
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="backlog drains, each next to a raw one (default 3; the median ratio is printed)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample the service with py-spy during the fan-out's changes")
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, default=EVENT_LOOPS[0],
                        help=f"the service's MAILWATCH_EVENT_LOOP and the raw peer's loop, the same so the raw "
                             f"peer stays a fair floor (default {EVENT_LOOPS[0]})")
    parser.add_argument("--raw-server", metavar="PORT_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_server:
        event_loop.run(args.event_loop, raw_server, args.raw_server)
        return 0

    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    from mailwatch_devstack.ports import free_port
    from mailwatch_devstack.postgres import TemporaryPostgres
    from mailwatch.secrets import generate_key
    from mailwatch.store.migrate import upgrade

    logdir = Path(tempfile.mkdtemp(prefix="mailwatch-fanout-"))
    children: list[Child] = []
    postgres = TemporaryPostgres()
    try:
        postgres.start()
        import psycopg

        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE mailwatch")
        upgrade(postgres.url("mailwatch"))
        http_port = free_port()
        service = Child("service", [sys.executable, "-m", "mailwatch.cli", "serve"], child_env({
            "MAILWATCH_DATABASE_URL": postgres.url("mailwatch"),
            "MAILWATCH_SECRET_KEYS": generate_key(),
            "MAILWATCH_OPERATOR_TOKEN": OPERATOR_TOKEN,
            **NO_TENANT_LIMITS,
            "MAILWATCH_LISTEN": "127.0.0.1:0",
            "MAILWATCH_HTTP_LISTEN": f"127.0.0.1:{http_port}",
            "MAILWATCH_PUBSUB_TOPIC": "projects/mailwatch-fanout/topics/gmail",
            "MAILWATCH_SYNC_ENABLED": "false", "MAILWATCH_RENEW_ENABLED": "false",
            "MAILWATCH_POLL_ENABLED": "false", "MAILWATCH_INGEST_ENABLED": "false",
            "MAILWATCH_LOG_FORMAT": "text", "MAILWATCH_LOG_LEVEL": "WARNING",
            "MAILWATCH_EVENT_LOOP": args.event_loop,
        }), logdir)
        children.append(service)
        target = service.start(r"mailwatch serving on (\S+:\d+)").group(1)
        port_file = logdir / "raw.port"
        raw = Child("raw", [sys.executable, __file__, "--raw-server", str(port_file), "--event-loop", args.event_loop],
                    child_env({}), logdir)
        children.append(raw)
        raw_target = raw.start(r"raw server on (\S+:\d+)").group(1)
        print(f"machine: {os.cpu_count()} CPUs, load average {_load()}; service {target} (pid {service.pid}), "
              f"raw grpc.aio server {raw_target} (pid {raw.pid}), both on {args.event_loop}", flush=True)
        asyncio.run(run(args, target=target, raw_target=raw_target, database_url=postgres.url(
            "mailwatch"), metrics_url=f"http://127.0.0.1:{http_port}/metrics",
            service=service, raw=raw))
        print(f"load average at the end: {_load()}")
        return 0
    finally:
        for child in reversed(children):
            child.stop()
        postgres.stop()


if __name__ == "__main__":
    sys.exit(main())
