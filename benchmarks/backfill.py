"""A registration's backfill of a large mailbox (issue 25 item 1): what it costs, and what it
does to the same tenant's live stream while it runs.

Starts its own peers (a throwaway Postgres, the Pub/Sub emulator, the Gmail simulator and the
service, each in its own process, as `benchmarks/pipeline.py` does) and stops each by pid on exit.
Through the public surfaces only (admin + mailbox gRPC API through the Python client, the
simulator's control API, the service's /metrics):

1. raw peer: the simulator's `messages.list` (500 a page) + `messages.get` (format=minimal, in
   batch requests of 10 parts: the per-user concurrency cap) for `--messages` seeded messages of
   a mailbox of their own, straight through google-api-python-client, one call after another,
   with the simulator's per-user quota lifted: the peer's own rate, mailwatch's ceiling.
2. mailwatch: a mailbox seeded with `--messages` messages (`seed_messages`, the control API) is
   registered with `backfill newest=--messages`, in a tenant that already streams a live mailbox.
   Timed from the RegisterMailbox call to BACKFILL_COMPLETED on the stream; Gmail calls and quota
   units of the backfilled user from the simulator's counters; per delivery batch, the time in
   Postgres and the tenant's writer-lock hold (the service's histograms
   `mailwatch_backfill_batch_postgres_seconds` / `mailwatch_backfill_writer_lock_seconds`).
   Meanwhile a live mailbox of the same tenant gets one message every `--live-spacing` seconds;
   its change-to-stream latency during the backfill is printed next to the same latency measured
   just before it (no backfill running). `--tenant-changes M` also puts M changes of a third
   (busy) mailbox of the tenant into the log right after the registration: the live traffic a
   backfill lasting many minutes sees in a busy tenant.

The pace is the service's (`--units-per-minute`, MAILWATCH_SYNC_BACKFILL_UNITS_PER_MINUTE, default
3,000 as the service's) under the simulator's per-user quota (`--user-quota`, default 6,000 as
Gmail's since May 2026; 0 lifts it). `--units-per-minute 10000000 --user-quota 0` takes Gmail's
limits away and shows what is left: mailwatch's own cost.

    .venv/bin/python benchmarks/backfill.py [--messages 10000] [--units-per-minute 3000] [--user-quota 6000]
        [--live-spacing 1.5] [--tenant-changes 0]

All processes share this machine's cores; each run prints its load average.
Measurements and what they showed: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import (  # noqa: E402 - also puts the repository root on sys.path
    OPERATOR_TOKEN, CpuMeter, Report, _latency_summary, _load, _postmaster_pid, _raise_keyboard_interrupt,
    service_settings, shown_settings, start_gmail_sim, start_postgres_and_emulator, stop_children,
)
from tests.fixtures.factory import tenant_key_at  # noqa: E402
from tests.fixtures.processes import Child, child_env  # noqa: E402

PROJECT = "mailwatch-bench"
TOPIC = f"projects/{PROJECT}/topics/gmail"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/mailwatch"
DOMAIN = "bench.test"
BACKFILLED = f"backfill@{DOMAIN}"
LIVE = f"live@{DOMAIN}"
BUSY = f"busy@{DOMAIN}"
RAW = f"raw@{DOMAIN}"
RAW_BATCH = 10  # parts per batch request: the simulator's (Gmail's) concurrent requests per user
BATCH_METRICS = ("mailwatch_backfill_batch_postgres_seconds", "mailwatch_backfill_writer_lock_seconds")


def _histograms(url: str) -> dict[str, dict]:
    """{name: {"sum", "count", "buckets": [(le, cumulative)]}} of BATCH_METRICS from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found: dict[str, dict] = {name: {"sum": 0.0, "count": 0.0, "buckets": []} for name in BATCH_METRICS}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for name in BATCH_METRICS:
                if sample.name == f"{name}_sum":
                    found[name]["sum"] = sample.value
                elif sample.name == f"{name}_count":
                    found[name]["count"] = sample.value
                elif sample.name == f"{name}_bucket":
                    found[name]["buckets"].append((float(sample.labels["le"]), sample.value))
    return found


def _histogram_summary(h: dict) -> str:
    count = h["count"]
    if not count:
        return "no samples"

    def bound(q: float) -> str:
        for le, cumulative in sorted(h["buckets"]):
            if cumulative >= q * count:
                return "> 5 s" if le == float("inf") else f"<= {le * 1000:g} ms"
        return "?"

    return f"mean {h['sum'] / count * 1000:.1f} ms, p50 {bound(0.5)}, p99 {bound(0.99)}, total {h['sum']:.1f} s (n={count:.0f})"


def raw_list_and_get(sim_url: str, key: dict, count: int) -> tuple[float, int]:
    """messages.list + messages.get of `count` messages of RAW, straight through
    google-api-python-client; (seconds, messages read)."""
    import google_auth_httplib2
    import httplib2
    from google.oauth2 import service_account
    from googleapiclient.discovery import build
    from googleapiclient.http import BatchHttpRequest

    info = {**key, "token_uri": f"{sim_url}/token"}
    creds = service_account.Credentials.from_service_account_info(
        info, scopes=["https://www.googleapis.com/auth/gmail.readonly"], subject=RAW)
    http = google_auth_httplib2.AuthorizedHttp(creds, http=httplib2.Http(timeout=60))
    gmail = build("gmail", "v1", static_discovery=True, http=http, client_options={"api_endpoint": sim_url})
    started = time.monotonic()
    ids: list[str] = []
    token = None
    while len(ids) < count:
        page = gmail.users().messages().list(userId="me", maxResults=min(500, count - len(ids)),
                                             pageToken=token).execute()
        ids.extend(m["id"] for m in page.get("messages", []))
        token = page.get("nextPageToken")
        if not token:
            break
    read = 0

    def got(_request_id, response, exception) -> None:
        nonlocal read
        if exception is not None:
            raise exception
        read += 1

    for start in range(0, len(ids), RAW_BATCH):
        batch = BatchHttpRequest(callback=got, batch_uri=f"{sim_url}/batch/gmail/v1")
        for message_id in ids[start:start + RAW_BATCH]:
            batch.add(gmail.users().messages().get(userId="me", id=message_id, format="minimal"))
        batch.execute(http=http)
    return time.monotonic() - started, read


class Stream:
    """One StreamChanges stream of the tenant: when each live MESSAGE_ADDED arrived, how many
    MESSAGE_EXISTING, and when BACKFILL_COMPLETED came."""

    def __init__(self) -> None:
        self.added: dict[str, float] = {}
        self.existing = 0
        self.completed_at: float | None = None
        self.completed: dict[str, str] = {}
        self.opened = asyncio.Event()
        self.done = asyncio.Event()

    async def run(self, client) -> None:
        from mailwatch_client import EventType

        added, existing = EventType.Value("EVENT_TYPE_MESSAGE_ADDED"), EventType.Value("EVENT_TYPE_MESSAGE_EXISTING")
        completed = EventType.Value("EVENT_TYPE_BACKFILL_COMPLETED")
        async with client.stream_changes(start="now") as stream:
            self.opened.set()
            async for event in stream:
                now = time.monotonic()
                if event.type == added:
                    self.added.setdefault(event.message_id, now)
                elif event.type == existing:
                    self.existing += 1
                elif event.type == completed:
                    self.completed_at = now
                    self.completed = dict(event.attributes)
                    self.done.set()


async def live_traffic(control, stream: Stream, spacing: float, stop: asyncio.Event) -> list[float]:
    """One message into LIVE every `spacing` seconds until `stop`; each one's change-to-stream latency."""
    sent: dict[str, float] = {}
    while not stop.is_set():
        message = await asyncio.to_thread(control.insert_message, LIVE, label_ids=["INBOX"])
        sent[message["id"]] = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), spacing)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not set(sent) <= set(stream.added):
        await asyncio.sleep(0.1)
    missing = set(sent) - set(stream.added)
    if missing:
        raise RuntimeError(f"{len(missing)} live changes never reached the stream")
    return [stream.added[i] - sent[i] for i in sent]


async def run(args, *, target: str, sim_url: str, metrics_url: str, say: Report, cpu: CpuMeter) -> None:
    from mailwatch_client import AsyncMailwatchClient, BackfillRequest, ServiceAccountCredentials
    from mailwatch_devstack.gmail_sim import SimulatorControl

    control = SimulatorControl(sim_url)
    tenant = await tenant_key_at(target, "bench", operator_token=OPERATOR_TOKEN)
    key = await asyncio.to_thread(control.create_service_account_key, name="mailwatch-bench", project_id=PROJECT,
                                  delegate_domains=[DOMAIN])
    await asyncio.to_thread(control.create_mailboxes, [BACKFILLED, LIVE, BUSY, RAW])
    started = time.monotonic()
    for address in (BACKFILLED, RAW):
        await asyncio.to_thread(control.seed_messages, address, args.messages, label_ids=["INBOX"])
    say(f"seeded {args.messages:,} messages into each of {BACKFILLED} and {RAW} through the control API "
        f"in {time.monotonic() - started:.1f}s")

    # 1. The raw peer, alone on the machine, with the per-user quota lifted.
    await asyncio.to_thread(control.configure, user_quota_units_per_minute=None)
    await asyncio.to_thread(control.reset_counters)
    raw_seconds, raw_read = await asyncio.to_thread(raw_list_and_get, sim_url, key, args.messages)
    raw_units = (await asyncio.to_thread(control.counters))["quotaUnits"].get(RAW, 0)
    raw_rate = raw_read / raw_seconds
    say(f"[1] raw peer: messages.list + messages.get of {raw_read:,} messages in {raw_seconds:.1f}s = "
        f"{raw_rate:,.0f} messages/s ({raw_units:,} quota units; per-user quota lifted)")
    at_limit = raw_units / args.user_quota if args.user_quota else None
    if at_limit:
        say(f"    at {args.user_quota:,} units/min per user those units take at least {at_limit:.1f} min")
    await asyncio.to_thread(control.configure,
                            user_quota_units_per_minute=args.user_quota if args.user_quota else None)

    # 2. mailwatch.
    credentials = ServiceAccountCredentials(json_key=json.dumps(key))
    async with AsyncMailwatchClient(target, tenant.key) as client:
        await client.register_mailbox(LIVE, credentials=credentials)
        if args.tenant_changes:
            await client.register_mailbox(BUSY, credentials=credentials)
        stream = Stream()
        reader = asyncio.create_task(stream.run(client))
        try:
            await asyncio.wait_for(stream.opened.wait(), 30)
            await asyncio.sleep(2)  # the watches' own first syncs settle
            stop = asyncio.Event()
            baseline = asyncio.create_task(live_traffic(control, stream, args.live_spacing, stop))
            await asyncio.sleep(args.baseline_seconds)
            stop.set()
            quiet = await baseline
            say(f"[2] live mailbox, no backfill running: change-to-stream {_latency_summary(quiet)}")

            await asyncio.to_thread(control.reset_counters)
            before = await asyncio.to_thread(_histograms, metrics_url)
            cpu.start()
            stop = asyncio.Event()
            started = time.monotonic()
            traffic = asyncio.create_task(live_traffic(control, stream, args.live_spacing, stop))
            mailbox = await client.register_mailbox(BACKFILLED, credentials=credentials,
                                                    backfill=BackfillRequest(newest=args.messages))
            if args.tenant_changes:
                inserted = 0
                while inserted < args.tenant_changes:
                    chunk = min(500, args.tenant_changes - inserted)
                    await asyncio.to_thread(control.insert_messages,
                                            [{"emailAddress": BUSY, "labelIds": ["INBOX"]}] * chunk)
                    inserted += chunk
                say(f"    {inserted:,} changes of {BUSY} inserted {time.monotonic() - started:.1f}s after the registration")
            timeout = args.messages * 5 / (min(args.units_per_minute, args.user_quota or args.units_per_minute) / 60) * 2 + 600
            await asyncio.wait_for(stream.done.wait(), timeout)
            wall = stream.completed_at - started
            stop.set()
            during = await traffic
            busy = cpu.summary()
            after = await asyncio.to_thread(_histograms, metrics_url)
            counters = await asyncio.to_thread(control.counters)
            state = await client.get_mailbox(mailbox.id)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    units = counters["quotaUnits"].get(BACKFILLED, 0)
    calls = {m: n for m, n in counters["calls"].get(BACKFILLED, {}).items() if m != "oauth2.token"}
    rate = stream.existing / wall
    say(f"[3] mailwatch backfill of {args.messages:,} (pace {args.units_per_minute:,} units/min, simulator's "
        f"per-user quota {args.user_quota or 'lifted'}): BACKFILL_COMPLETED {wall:.1f}s ({wall / 60:.1f} min) after "
        f"RegisterMailbox; {stream.existing:,} MESSAGE_EXISTING = {rate:,.0f} messages/s; {stream.completed}")
    say(f"    Gmail for {BACKFILLED}: {units:,} quota units, calls {calls}")
    say(f"    backfill state {state.backfill.state}, listed {state.backfill.listed_count}, "
        f"delivered {state.backfill.delivered_count}, skipped {state.backfill.skipped_count}")
    for name in BATCH_METRICS:
        delta = {"sum": after[name]["sum"] - before[name]["sum"], "count": after[name]["count"] - before[name]["count"],
                 "buckets": [(le, n - dict(before[name]["buckets"]).get(le, 0)) for le, n in after[name]["buckets"]]}
        say(f"    per delivery batch, {name.removeprefix('mailwatch_backfill_')}: {_histogram_summary(delta)}")
    say(f"    live mailbox during the backfill: change-to-stream {_latency_summary(during)}")
    say(f"    {busy}")
    say(f"mailwatch / raw peer: {rate:,.0f} / {raw_rate:,.0f} messages/s = {rate / raw_rate:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000, help="messages backfilled (default 10000)")
    parser.add_argument("--units-per-minute", type=int, default=3000,
                        help="the service's MAILWATCH_SYNC_BACKFILL_UNITS_PER_MINUTE (default 3000, the service's)")
    parser.add_argument("--user-quota", type=int, default=6000,
                        help="the simulator's quota units per user per minute (default 6000, Gmail's); 0 lifts it")
    parser.add_argument("--live-spacing", type=float, default=1.5,
                        help="seconds between two changes of the live mailbox (default 1.5: Gmail notifies a "
                             "user at most once a second)")
    parser.add_argument("--baseline-seconds", type=float, default=20.0,
                        help="live traffic measured before the backfill (default 20)")
    parser.add_argument("--tenant-changes", type=int, default=0,
                        help="changes of a busy mailbox of the same tenant put in the log during the backfill")
    parser.add_argument("--keep-logs", action="store_true", help="keep the service and simulator logs")
    args = parser.parse_args()
    if args.messages < 1 or args.units_per_minute < 1 or args.user_quota < 0 or args.tenant_changes < 0:
        parser.error("sizes must be positive")

    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from mailwatch_devstack.ports import free_port

    say = Report()
    logdir = Path(tempfile.mkdtemp(prefix="mailwatch-bench-backfill-"))
    children: list[Child] = []
    failed = True
    with contextlib.ExitStack() as stack:
        try:
            postgres, database_url, emulator = start_postgres_and_emulator(stack)
            from google.cloud import pubsub_v1

            publisher = pubsub_v1.PublisherClient()
            stack.callback(publisher.api.transport.close)
            subscriber = pubsub_v1.SubscriberClient()
            stack.callback(subscriber.close)
            publisher.create_topic(name=TOPIC)
            subscriber.create_subscription(name=SUBSCRIPTION, topic=TOPIC, ack_deadline_seconds=60)

            sim, sim_url = start_gmail_sim(emulator.host, logdir)
            children.append(sim)

            http_port = free_port()
            service_env = {
                **service_settings(database_url=database_url, sim_url=sim_url, http_port=http_port),
                "MAILWATCH_SYNC_BACKFILL_UNITS_PER_MINUTE": str(args.units_per_minute),
            }
            service = Child("service", [sys.executable, "-m", "mailwatch.cli", "serve"],
                            child_env({**service_env, "PUBSUB_EMULATOR_HOST": emulator.host}), logdir)
            children.append(service)
            target = service.start(r"mailwatch serving on (\S+:\d+)").group(1)
            cpu = CpuMeter({"service": service.pid, "simulator": sim.pid}, postmaster=_postmaster_pid(postgres))
            say(f"machine: {os.cpu_count()} CPUs, load average {_load()} at start")
            say("service settings: " + shown_settings(service_env))
            asyncio.run(run(args, target=target, sim_url=sim_url, metrics_url=f"http://127.0.0.1:{http_port}/metrics",
                            say=say, cpu=cpu))
            say(f"load average at the end: {_load()} (other processes on this host skew every figure)")
            failed = False
        except KeyboardInterrupt:
            print("interrupted; stopping everything", file=sys.stderr, flush=True)
        finally:
            stop_children(children, failed=failed, logdir=logdir, keep_logs=args.keep_logs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
