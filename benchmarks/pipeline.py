"""The whole mailwatch pipeline on loopback, each part in its own process.

Starts its own peers and stops every one of them by pid on exit (also on
Ctrl-C / SIGTERM / failure):

- a throwaway Postgres (`mailwatch_devstack.postgres`), migrated;
- the Pub/Sub emulator (`mailwatch_devstack.pubsub_emulator`) with the Gmail
  topic and the service's pull subscription;
- the Gmail simulator as a child process (`python -m mailwatch.cli gmail-sim`);
- the service as a child process (`python -m mailwatch.cli serve`, MAILWATCH_*
  environment), so the service, the simulator and this load generator do not
  share one GIL.

Then, through the public surfaces only (admin + mailbox gRPC API, simulator
control API, the Pub/Sub topic, read-only SQL for the ingest clock), it
creates a tenant and an API key, registers N mailboxes (service-account
credentials from the simulator), opens one StreamChanges stream
(START_POSITION_NOW, every event type) and runs four phases:

1. latency: single-message inserts paced so that no mailbox changes more than
   once per `--latency-spacing` seconds (default 1.5 s > Gmail's 1
   notification/s/user, so no notification is dropped); latency = event
   arriving on the stream - the simulator's insert call returning.
1b. metadata: the same paced inserts to mailboxes registered with message
   metadata and to as many plain ones; latency and Gmail calls / quota units
   per change for each group, and the batch requests the metadata cost.
1f. raw floor (after the latency phase; `--no-floor` skips it, it adds 10-20 s): the same paced
   inserts to as many mailboxes of its own, through `benchmarks/raw_floor.py`, a process making
   exactly the round trips one change costs the service with the bare libraries the service
   uses (Pub/Sub pull + ack, the Postgres statements, history.list, and messages.get when the
   history leaves labels out, one stream write; the Gmail calls over the library's own
   transport, httplib2 on a pool thread, which costs more than the service's exchange on its
   event loop), with
   the service paused meanwhile; prints the service's CPU per change next to the floor's, the
   floor's split by part, and the load average. The host's speed moves within an hour: the
   two figures of one run compare, figures of two runs do not.
2. throughput (backlog drain): M changes inserted with the simulator's
   notifications switched off, then one more change per mailbox with them on;
   changes/s = changes on the stream after that trigger / (trigger -> last
   one). This is the sync + change log + stream capacity. A burst with
   notifications on is bounded instead by Gmail's 1 notification/s/user: the
   tail of the burst waits for a later notification or the fallback poll
   (`--poll-interval`), so its p99 is about the poll interval.
3. raw emulator: `benchmarks/pubsub_pull.py`'s synchronous pull(1000) + one
   batched acknowledge loop, no processing, on a fresh topic/subscription,
   same message count as phase 4.
4. ingest: Gmail-shaped notifications published straight to the Gmail topic
   (each naming a real change: the simulator's own notifications are switched
   off for this phase and the changes inserted first). The service process is
   paused (SIGSTOP) while they are published and resumed (SIGCONT) when the
   clock starts, so, as in phase 3, the drain is timed without the publisher
   competing for the CPU. Done = every mailbox's `notified_history_id` has
   reached its newest notified history id (polled every 10 ms); then the
   syncs those notifications cause are awaited for the Gmail call counts.

Each phase also prints deltas of the service's own Prometheus metrics
(MAILWATCH_HTTP_LISTEN /metrics: ingest batches, syncs, stream reads) and the
CPU seconds each process used (from /proc), to show where the time went.

Gmail calls and quota units come from the simulator's counters (reset per
phase; `oauth2.token` grants are not Gmail API calls and are left out);
"per notification" divides by the notifications the simulator published in
that phase (phases 1-2) or that were published to the topic (phase 4).

    /work/venv/bin/python benchmarks/pipeline.py [--mailboxes 50] [--changes 10000] [--notifications 20000]
        [--phases latency,metadata,throughput,ingest] [--profile DIR] [--ingest-replica] [--event-loop uvloop|asyncio]
        [--no-floor]

`--ingest-replica` runs ingest in a second `mailwatch serve --role ingest`
(MAILWATCH_ROLE=ingest) and the first as `--role sync`, as a deployment with
separate ingest replicas would: in one process, ingest shares its core with the syncs its own
notifications cause.

The latency phase also prints the service's CPU per change (the issue's "CPU
per notification, paced") and per sync (notifications that arrive while their
mailbox syncs share one sync, more so on a loaded host: per sync is the figure
that compares across runs); `--profile DIR` samples the service with py-spy
(py-spy is in the dev lock) during the latency and ingest phases.

All processes share this machine's cores: figures are for the whole stack on
one host, not for the service alone; each run prints its load average.
Measurements and what they showed: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))  # the repository root: the test world's helpers

from mailwatch.config import EVENT_LOOPS  # noqa: E402
from tests.fixtures.factory import tenant_key  # noqa: E402
from tests.fixtures.processes import Child, child_env  # noqa: E402

PROJECT = "mailwatch-bench"
TOPIC = f"projects/{PROJECT}/topics/gmail"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/mailwatch"
OPERATOR_TOKEN = "bench-operator-token"
LABELS = ["INBOX", "UNREAD"]
PHASES = ("latency", "metadata", "throughput", "ingest")
STAGE_METRIC = "mailwatch_pipeline_stage_seconds"
STAGES = ("published_to_pulled", "pulled_to_recorded", "due_to_claimed", "claimed_to_committed", "commit")
SHAPES = {"labels": True, "bare": False}  # history messages with their labelIds (Gmail's way), or without


# --- child processes ---------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds used per process group (each peer runs in its own session) over a phase."""

    TICKS = os.sysconf("SC_CLK_TCK")

    def __init__(self, sessions: dict[str, int], postmaster: int | None = None) -> None:
        self.sessions = sessions  # name -> session id (the pid of the peer's session leader)
        self.postmaster = postmaster  # Postgres backends setsid() themselves: counted by parent
        self._before: dict[str, float] = {}
        self._started = 0.0
        self.used: dict[str, float] = {}  # CPU seconds per process over the last phase summarised

    def _read(self) -> dict[str, float]:
        by_session: dict[int, float] = {}
        postgres = 0.0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            seconds = (int(fields[11]) + int(fields[12])) / self.TICKS
            session = int(fields[3])
            by_session[session] = by_session.get(session, 0.0) + seconds
            if self.postmaster is not None and self.postmaster in (int(entry), int(fields[1])):
                postgres += seconds
        values = {name: by_session.get(sid, 0.0) for name, sid in self.sessions.items()}
        if self.postmaster is not None:
            values["postgres"] = postgres
        own = os.times()
        values["benchmark"] = own.user + own.system  # this process (all its threads)
        return values

    def start(self) -> None:
        self._before = self._read()
        self._started = time.monotonic()

    def summary(self) -> str:
        """The phase's CPU seconds per process, one decimal; `used` keeps them unrounded."""
        now, wall = self._read(), time.monotonic() - self._started
        self.used = {name: now[name] - self._before.get(name, 0.0) for name in now}
        parts = [f"{name} {seconds:.1f}" for name, seconds in self.used.items()]
        return f"CPU seconds over {wall:.1f}s: " + ", ".join(parts)


class Profiler:
    """`--profile DIR`: py-spy samples the service process during a phase, writing
    collapsed stacks (one file per phase, one line per stack with its sample count:
    flamegraph.pl and speedscope read them). `--gil` keeps only the samples of the
    thread holding the GIL, i.e. where the service's Python CPU went. py-spy pauses
    the process at each sample: a profiled run's latency and CPU figures are not
    comparable with an unprofiled one's."""

    def __init__(self, directory: Path | None, pid: int) -> None:
        self.directory = directory
        self.pid = pid
        self._process = None
        self._path: Path | None = None

    def start(self, name: str) -> None:
        if self.directory is None:
            return
        import subprocess

        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self._path = self.directory / f"{name}.txt"
        self._process = subprocess.Popen(
            [spy, "record", "--pid", str(self.pid), "--format", "raw", "--rate", "200", "--threads", "--gil",
             "--output", str(self._path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def stop(self) -> str:
        process, self._process = self._process, None
        if process is None:
            return ""
        process.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        try:
            process.wait(timeout=60)
        except Exception:  # noqa: BLE001 - a stuck profiler must not hang the benchmark
            process.kill()
            process.wait()
        return f"profile: {self._path}"


#: The service's tenant limits switched off: the benchmarks measure the service, not the limits
#: (one tenant opens a thousand streams and registers thousands of mailboxes as fast as it can).
NO_TENANT_LIMITS = {
    "MAILWATCH_LIMITS_STREAMS_PER_TENANT": "0",
    "MAILWATCH_LIMITS_RPCS_PER_SECOND_PER_KEY": "0",
    "MAILWATCH_LIMITS_REGISTRATIONS_PER_MINUTE_PER_TENANT": "0",
}

def start_postgres_and_emulator(stack: contextlib.ExitStack):
    """A throwaway Postgres with a migrated `mailwatch` database, and the Pub/Sub emulator (this
    process's PUBSUB_EMULATOR_HOST), each stopped by `stack`; (postgres, database URL, emulator)."""
    import psycopg

    from mailwatch_devstack.postgres import TemporaryPostgres
    from mailwatch_devstack.pubsub_emulator import PubSubEmulator
    from mailwatch.store.migrate import upgrade

    postgres = TemporaryPostgres()
    stack.callback(postgres.stop)
    postgres.start()
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE mailwatch")
    database_url = postgres.url("mailwatch")
    upgrade(database_url)
    emulator = PubSubEmulator()
    stack.callback(emulator.stop)
    emulator.start()
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
    return postgres, database_url, emulator


def start_gmail_sim(emulator_host: str, logdir: Path) -> tuple[Child, str]:
    """The Gmail simulator in its own process, pushing to the Pub/Sub emulator; (child, its URL)."""
    from mailwatch_devstack.ports import free_port

    sim = Child("gmail-sim", [sys.executable, "-m", "mailwatch.cli", "gmail-sim", "--host", "127.0.0.1",
                              "--port", str(free_port()), "--pubsub-emulator-host", emulator_host],
                child_env({"PUBSUB_EMULATOR_HOST": emulator_host}), logdir)
    return sim, sim.start(r"gmail-sim listening on (http://\S+)").group(1)


def service_settings(*, database_url: str, sim_url: str, http_port: int) -> dict[str, str]:
    """The settings every benchmark's service runs with: its peers, no tenant limits, quiet logs."""
    from mailwatch.secrets import generate_key

    return {
        "MAILWATCH_DATABASE_URL": database_url,
        "MAILWATCH_SECRET_KEYS": generate_key(),
        "MAILWATCH_OPERATOR_TOKEN": OPERATOR_TOKEN,
        **NO_TENANT_LIMITS,
        "MAILWATCH_LISTEN": "127.0.0.1:0",
        "MAILWATCH_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "MAILWATCH_GMAIL_API_ENDPOINT": sim_url,
        "MAILWATCH_GOOGLE_TOKEN_URI": f"{sim_url}/token",
        "MAILWATCH_PUBSUB_TOPIC": TOPIC,
        "MAILWATCH_PUBSUB_SUBSCRIPTIONS": SUBSCRIPTION,
        "MAILWATCH_INGEST_PULL_TIMEOUT": "2",
        "MAILWATCH_LOG_FORMAT": "text",
        "MAILWATCH_LOG_LEVEL": "WARNING",
    }


def shown_settings(env: dict[str, str]) -> str:
    """`env` without its secrets and the database URL, as the report prints it."""
    return " ".join(f"{k}={v}" for k, v in env.items()
                    if k not in ("MAILWATCH_SECRET_KEYS", "MAILWATCH_OPERATOR_TOKEN", "MAILWATCH_DATABASE_URL"))


def stop_children(children: list[Child], *, failed: bool, logdir: Path, keep_logs: bool) -> None:
    """Stops each child by pid, last started first; prints a child's log tail when the run failed or
    it exited badly; removes the logs unless `keep_logs`."""
    for child in reversed(children):
        code = child.stop()
        if failed or code not in (0, None):
            print(f"--- {child.name} (exit {code}) log tail:\n{child.tail()}", file=sys.stderr)
    if keep_logs:
        print(f"logs kept in {logdir}", file=sys.stderr)
    else:
        shutil.rmtree(logdir, ignore_errors=True)


def _postmaster_pid(postgres) -> int | None:
    try:
        return int((postgres.datadir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


# --- measuring -----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class GmailUsage:
    calls: int  # Gmail API calls (token grants excluded)
    units: int
    by_method: dict[str, int]
    notifications: dict[str, int]  # simulator notification statuses during the phase

    def per(self, notifications: int) -> str:
        if not notifications:
            return "n/a (no notifications)"
        return f"{self.calls / notifications:.2f} calls, {self.units / notifications:.2f} quota units"

    def describe(self) -> str:
        methods = ", ".join(f"{m} {n}" for m, n in sorted(self.by_method.items()))
        return f"{self.calls} calls ({methods or 'none'}), {self.units} quota units"


class GmailMeter:
    """Simulator counters and notification statuses over one phase."""

    def __init__(self, control) -> None:
        self.control = control
        self._notifications: dict[str, int] = {}

    def start(self) -> None:
        self.control.flush_notifications(timeout=10)
        self.control.reset_counters()
        self._notifications = dict(self.control.notification_counts())

    def read(self) -> GmailUsage:
        self.control.flush_notifications(timeout=10)
        counters = self.control.counters()
        now = self.control.notification_counts()
        delta = {k: now.get(k, 0) - self._notifications.get(k, 0) for k in set(now) | set(self._notifications)}
        by_method = {m: n for m, n in counters.get("methods", {}).items() if m != "oauth2.token" and n}
        return GmailUsage(
            calls=sum(by_method.values()),
            units=int(counters.get("totalQuotaUnits", 0)),
            by_method=by_method,
            notifications={k: v for k, v in delta.items() if v},
        )


class StreamConsumer:
    """Reads one StreamChanges stream; remembers when each MESSAGE_ADDED arrived."""

    def __init__(self) -> None:
        self.arrivals: dict[tuple[str, str], float] = {}  # monotonic
        self.observed: dict[tuple[str, str], float] = {}  # event observe_time - arrival, in wall-clock seconds
        self.events = 0
        self.responses = 0
        self.heartbeats = 0
        self._first = asyncio.Event()
        self._watching: set[tuple[str, str]] = set()
        self._all_seen = asyncio.Event()
        self.error: BaseException | None = None

    async def run(self, call) -> None:
        from mailwatch.v1 import resources_pb2

        added = resources_pb2.EVENT_TYPE_MESSAGE_ADDED
        try:
            async for response in call:
                now = time.monotonic()
                wall = time.time()
                self.responses += 1
                if response.events:
                    self.events += len(response.events)
                    for event in response.events:
                        if event.type == added:
                            key = (event.email_address, event.message_id)
                            if key not in self.arrivals:
                                self.arrivals[key] = now
                                observe = event.observe_time.seconds + event.observe_time.nanos / 1e9
                                self.observed[key] = wall - observe
                            if self._watching:
                                self._watching.discard(key)
                                if not self._watching:
                                    self._all_seen.set()
                else:
                    self.heartbeats += 1
                self._first.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported by wait_for
            self.error = exc
            self._first.set()
            self._all_seen.set()

    async def wait_open(self, timeout: float) -> None:
        await asyncio.wait_for(self._first.wait(), timeout)
        self._check()

    async def wait_for(self, keys, timeout: float) -> set[tuple[str, str]]:
        """Wait until every key has arrived; returns the ones still missing at the timeout."""
        self._watching = {key for key in keys if key not in self.arrivals}
        self._all_seen.clear()
        if self._watching:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_seen.wait(), timeout)
        self._check()
        missing, self._watching = set(self._watching), set()
        return missing

    def _check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the change stream failed: {self.error!r}")


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)


def _latency_summary(latencies: list[float]) -> str:
    if not latencies:
        return "no samples"
    return (f"p50 {percentile(latencies, 50) * 1000:.0f} ms, p99 {percentile(latencies, 99) * 1000:.0f} ms "
            f"(mean {statistics.fmean(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms, "
            f"n={len(latencies)})")


# --- phases ----------------------------------------------------------------------------------------------


async def _insert(control, items: list[dict]) -> list[dict]:
    return await asyncio.to_thread(control.insert_messages, items)


class ServiceMetrics:
    """Deltas of a few of the service's Prometheus metrics (MAILWATCH_HTTP_LISTEN /metrics) over a phase."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._before: dict[str, float] = {}
        self.deltas: dict[str, float] = {}  # of the last `summary`

    def _read(self) -> dict[str, float]:
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.url, timeout=10) as response:
            text = response.read().decode()
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith(STAGE_METRIC):
                    # per stage (and per bucket): mailwatch.stages
                    key = f"{sample.name}|{sample.labels.get('stage')}|{sample.labels.get('le', '')}"
                    values[key] = sample.value
                elif sample.name.endswith(("_sum", "_count", "_total")):
                    values[sample.name] = values.get(sample.name, 0.0) + sample.value
        return values

    def start(self) -> None:
        self._before = self._read()

    def stages(self) -> dict[str, str]:
        """Per stage the service sees (mailwatch.stages) over the phase: mean, and p50 / p99 as the
        upper bound of the histogram bucket they fall in."""
        now = self._read()
        d = {k: v - self._before.get(k, 0.0) for k, v in now.items() if k.startswith(STAGE_METRIC)}
        found: dict[str, str] = {}
        for stage in STAGES:
            count = d.get(f"{STAGE_METRIC}_count|{stage}|", 0)
            if not count:
                found[stage] = "no samples"
                continue
            total = d.get(f"{STAGE_METRIC}_sum|{stage}|", 0.0)
            buckets = sorted((float(k.rsplit("|", 1)[1]), v) for k, v in d.items()
                             if k.startswith(f"{STAGE_METRIC}_bucket|{stage}|"))

            def bound(q: float) -> str:
                for le, cumulative in buckets:
                    if cumulative >= q * count:
                        return "> 300 s" if le == float("inf") else f"<= {le * 1000:g} ms"
                return "?"

            found[stage] = (f"mean {total / count * 1000:.0f} ms, p50 {bound(0.5)}, p99 {bound(0.99)} "
                            f"(n={count:.0f})")
        return found

    def summary(self) -> str:
        now = self._read()
        d = self.deltas = {k: v - self._before.get(k, 0.0) for k, v in now.items()}

        def mean_ms(name: str) -> str:
            count = d.get(f"{name}_count", 0)
            return f"{d.get(f'{name}_sum', 0) / count * 1000:.1f} ms" if count else "-"

        batches = d.get("mailwatch_ingest_batch_messages_count", 0)
        mean_batch = d.get("mailwatch_ingest_batch_messages_sum", 0) / batches if batches else 0
        return (f"ingest {batches:.0f} batches (mean {mean_batch:.0f} msgs, write "
                f"{mean_ms('mailwatch_ingest_batch_write_seconds')}); "
                f"{d.get('mailwatch_sync_seconds_count', 0):.0f} syncs (mean {mean_ms('mailwatch_sync_seconds')}), "
                f"{d.get('mailwatch_sync_events_total', 0):.0f} events written, "
                f"{d.get('mailwatch_sync_behind_notification_total', 0):.0f} ended short of a notification; "
                f"{d.get('mailwatch_stream_reads_total', 0):.0f} stream reads, "
                f"{d.get('mailwatch_stream_feed_reads_total', 0):.0f} shared-reader reads for "
                f"{d.get('mailwatch_change_notifications_total', 0):.0f} change notifications")


@dataclass
class Phase:
    control: object
    consumer: StreamConsumer
    metrics: ServiceMetrics
    cpu: CpuMeter
    emails: list[str]
    say: Report
    profiler: Profiler


async def phase_latency(args, ph: Phase, shape: str) -> None:
    """Paced single changes; each change's latency split into its stages:
    the simulator's change -> publish (per notification, from its log), the stages
    the service sees (mailwatch.stages, from its histograms), and commit -> on the
    stream (per change, from each event's observe_time)."""
    emails, say, consumer = ph.emails, ph.say, ph.consumer
    await asyncio.to_thread(ph.control.configure, history_label_ids=SHAPES[shape])
    rate = len(emails) / args.latency_spacing  # changes/s such that each mailbox changes once per spacing
    count = args.latency_changes
    say(f"[1] latency, history {'with' if SHAPES[shape] else 'without'} labelIds: {count} single-message "
        f"inserts, {rate:.1f}/s round-robin over {len(emails)} mailboxes (each mailbox every "
        f"{args.latency_spacing:.1f}s)")
    await asyncio.sleep(1.1)  # Gmail's 1 notification/s/user window of any earlier change has passed
    meter = GmailMeter(ph.control)
    await asyncio.to_thread(meter.start)
    await asyncio.to_thread(ph.metrics.start)
    first_seq = max((e["seq"] for e in await asyncio.to_thread(ph.control.notifications)), default=0)
    ph.cpu.start()
    ph.profiler.start(f"latency-{shape}")
    sent, inserting = await _paced_inserts(ph.control, emails, count, args.latency_spacing, "latency")
    missing = await consumer.wait_for(sent, timeout=args.poll_interval * 2 + 30)
    cpu = ph.cpu.summary()
    profiled = ph.profiler.stop()
    await asyncio.sleep(0.5)
    usage = await asyncio.to_thread(meter.read)
    stages = await asyncio.to_thread(ph.metrics.stages)
    log = [e for e in await asyncio.to_thread(ph.control.notifications) if e["seq"] > first_seq]
    publish = [e["publishedAfterSeconds"] for e in log if "publishedAfterSeconds" in e]
    arrived = [k for k in sent if k in consumer.arrivals]
    latencies = [consumer.arrivals[k] - sent[k] for k in arrived]
    delivery = [consumer.observed[k] for k in arrived]
    published = usage.notifications.get("published", 0)
    say(f"    inserted at {count / inserting:.1f}/s (target {rate:.1f}/s)")
    say(f"    change-to-stream latency: {_latency_summary(latencies)}")
    say("      by stage:")
    say(f"        Gmail change -> published (simulator's queue + publish call): {_latency_summary(publish)}")
    say(f"        published -> pulled (Pub/Sub, ingest's pull): {stages['published_to_pulled']}")
    say(f"        pulled -> recorded (ingest's batch write): {stages['pulled_to_recorded']}")
    say(f"        recorded -> sync claimed (oldest due notification): {stages['due_to_claimed']}")
    say(f"        sync claimed -> committed (Gmail's answers, CPU, commit): {stages['claimed_to_committed']}")
    say(f"          of which page commits: {stages['commit']}")
    say(f"        committed -> on the stream (NOTIFY, stream read, gRPC): {_latency_summary(delivery)}")
    if missing:
        say(f"    MISSING: {len(missing)} changes never reached the stream")
    say(f"    notifications by the simulator: {usage.notifications}")
    say(f"    Gmail: {usage.describe()}")
    say(f"    Gmail per notification: {usage.per(published)}")
    if arrived:
        say(f"    Gmail per delivered change: {usage.calls / len(arrived):.2f} calls, "
            f"{usage.units / len(arrived):.2f} quota units")
    say(f"    service: {await asyncio.to_thread(ph.metrics.summary)}")
    say(f"    {cpu}; service CPU per change: {_service_cpu_ms(ph.cpu, count)}")
    # Notifications that arrive while their mailbox syncs coalesce into one sync (more so
    # on a loaded host), so CPU per change moves with syncs per change; per sync it does not.
    syncs = ph.metrics.deltas.get("mailwatch_sync_seconds_count", 0)
    say(f"    service CPU per sync: {_service_cpu_ms(ph.cpu, syncs)} ({syncs / count:.2f} syncs per change)")
    if profiled:
        say(f"    {profiled}")


async def _paced_inserts(control, emails: list[str], count: int, spacing: float, subject: str
                         ) -> tuple[dict[tuple[str, str], float], float]:
    """`count` single-message inserts round-robin over `emails`, each mailbox changing every
    `spacing` seconds; ({(email, message id): monotonic time its insert returned}, seconds taken)."""
    rate = len(emails) / spacing
    sent: dict[tuple[str, str], float] = {}
    last_insert: dict[str, float] = {}
    started = time.monotonic()
    for i in range(count):
        email = emails[i % len(emails)]
        # On schedule, and never sooner than the spacing after this mailbox's last change: a
        # benchmark that fell behind (a loaded host) must not catch up in a burst that puts two
        # changes of a mailbox inside Gmail's 1 notification/s window (one would be dropped).
        delay = max(started + i / rate, last_insert.get(email, 0.0) + spacing) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        last_insert[email] = time.monotonic()
        (result,) = await _insert(control, [{"emailAddress": email, "labelIds": LABELS, "subject": f"{subject} {i}"}])
        sent[(email, result["id"])] = time.monotonic()
    return sent, time.monotonic() - started


def _service_cpu_ms(cpu: CpuMeter, count: int) -> str:
    """The service's CPU seconds over the phase (unrounded: clock ticks) per unit of work, in ms."""
    seconds = cpu.used.get("service")
    return "n/a" if seconds is None or not count else f"{seconds / count * 1000:.2f} ms"


async def phase_metadata(args, ph: Phase, register) -> None:
    """Metadata on MESSAGE_ADDED next to the plain path, in one run: the same paced inserts go to
    mailboxes registered with metadata and to plain ones; latency and Gmail cost per change by group."""
    say, consumer, control = ph.say, ph.consumer, ph.control
    n = min(args.metadata_mailboxes, len(ph.emails))
    plain = ph.emails[:n]
    opted = [f"meta{i:04d}@bench.test" for i in range(n)]
    await asyncio.to_thread(control.create_mailboxes, opted)
    await asyncio.gather(*(register(email, metadata=True) for email in opted))
    await asyncio.sleep(1.5)  # the new watches' own notifications (Gmail's 1/s/user window) pass
    count = args.metadata_changes
    pairs = [(plain[i % n], opted[i % n]) for i in range(count)]
    rate = 2 * n / args.latency_spacing
    say(f"[1b] metadata: {count} inserts each to {n} plain and {n} metadata mailboxes, {rate:.1f}/s in all")
    await asyncio.to_thread(control.flush_notifications, 10)
    await asyncio.to_thread(control.reset_counters)
    sent: dict[tuple[str, str], float] = {}
    started = time.monotonic()
    for i, pair in enumerate(pairs):
        for j, email in enumerate(pair):
            delay = started + (2 * i + j) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            (result,) = await _insert(control, [{"emailAddress": email, "labelIds": LABELS,
                                                 "subject": f"metadata {i}", "from": "bench@example.com"}])
            sent[(email, result["id"])] = time.monotonic()
    missing = await consumer.wait_for(sent, timeout=args.poll_interval * 2 + 30)
    await asyncio.sleep(0.5)
    counters = await asyncio.to_thread(control.counters)
    for name, group in (("plain", set(plain)), ("metadata", set(opted))):
        keys = [k for k in sent if k[0] in group and k in consumer.arrivals]
        calls = sum(n for user in group for method, n in counters["calls"].get(user, {}).items()
                    if method != "oauth2.token")
        units = sum(counters["quotaUnits"].get(user, 0) for user in group)
        say(f"    {name:>8}: latency {_latency_summary([consumer.arrivals[k] - sent[k] for k in keys])}")
        say(f"    {name:>8}: Gmail per change {calls / count:.2f} calls, {units / count:.2f} quota units")
    say(f"    Gmail batch requests: {counters['batches']['requests']} "
        f"(parts: {sum(counters['batches']['sizes'])})")
    if missing:
        say(f"    MISSING: {len(missing)} changes never reached the stream")


async def phase_throughput(args, ph: Phase) -> None:
    """Backlog drain: M changes wait in Gmail, then one notification per mailbox sets the pipeline off."""
    emails, say, consumer, control = ph.emails, ph.say, ph.consumer, ph.control
    count, chunk = args.changes, args.chunk
    say(f"[2] throughput: {count} changes inserted with the simulator's notifications off "
        f"(bulk inserts of {chunk}, round-robin over {len(emails)} mailboxes), then one more change per "
        f"mailbox with notifications on")
    await asyncio.to_thread(control.set_notification_faults, drop_fraction=1.0)
    try:
        keys: set[tuple[str, str]] = set()
        started = time.monotonic()
        for offset in range(0, count, chunk):
            items = [{"emailAddress": emails[i % len(emails)], "labelIds": LABELS, "subject": f"bulk {i}"}
                     for i in range(offset, min(count, offset + chunk))]
            for result in await _insert(control, items):
                keys.add((result["emailAddress"], result["id"]))
        insert_seconds = time.monotonic() - started
        await asyncio.to_thread(control.flush_notifications, 10)
    finally:
        await asyncio.to_thread(control.set_notification_faults, drop_fraction=0.0)
    # The simulator's 1/s/user limit counts the notifications it dropped on purpose too.
    await asyncio.sleep(1.2)
    meter = GmailMeter(control)
    await asyncio.to_thread(meter.start)
    await asyncio.to_thread(ph.metrics.start)
    ph.cpu.start()
    started = time.monotonic()
    triggers = await _insert(control, [{"emailAddress": e, "labelIds": LABELS, "subject": "go"} for e in emails])
    keys.update((r["emailAddress"], r["id"]) for r in triggers)
    missing = await consumer.wait_for(keys, timeout=args.poll_interval * 2 + 120)
    cpu = ph.cpu.summary()
    arrived = [consumer.arrivals[k] for k in keys if k in consumer.arrivals and consumer.arrivals[k] >= started]
    early = sum(1 for k in keys if k in consumer.arrivals) - len(arrived)  # a fallback poll got there first
    before_poll = sum(1 for t in arrived if t - started < args.poll_interval)
    elapsed = max(arrived) - started if arrived else float("nan")
    await asyncio.sleep(1.0)  # trailing syncs finish before the counters are read
    usage = await asyncio.to_thread(meter.read)
    published = usage.notifications.get("published", 0)
    total = len(keys)
    say(f"    (backlog inserted at {count / insert_seconds:,.0f} changes/s into the simulator; not timed)")
    say(f"    changes delivered to the stream: {len(arrived)}/{total} in {elapsed:.2f}s after the trigger "
        f"-> {len(arrived) / elapsed:,.0f} changes/s ({before_poll} within the first poll interval)")
    if early:
        say(f"    ({early} backlog changes were synced by the fallback poll before the trigger; not counted)")
    if missing:
        say(f"    MISSING: {len(missing)} changes never reached the stream")
    say(f"    notifications by the simulator: {usage.notifications}")
    say(f"    Gmail: {usage.describe()}")
    say(f"    Gmail per notification: {usage.per(published)}; per change: "
        f"{usage.calls / total:.4f} calls, {usage.units / total:.4f} units")
    say(f"    service: {await asyncio.to_thread(ph.metrics.summary)}")
    say(f"    {cpu}")


FLOOR_SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/rawfloor"


async def phase_floor(args, ph: Phase, *, shape: str, service_cpu: float, services: list[Child],
                      subscriber, start_floor) -> None:
    """The latency phase's paced changes (same count, mailboxes and spacing) through `raw_floor.py`:
    the round trips one change costs the service, made with the bare libraries, in a process of
    its own; its CPU per change next to the service's.

    The floor's mailboxes are its own (the service has never heard of them) and are watched on
    the Gmail topic, which the floor pulls through a subscription of its own: the simulator
    publishes as it does for the service, and no notification of the floor's reaches the
    service's data. The service (and any ingest replica) is paused while the floor is measured,
    as the floor does not run while the service is: each process's CPU is measured next to the
    same peers and nothing else of ours. (Paused, the service's pull holds nothing of the
    floor's: each subscription gets its own copy of every message.)"""
    import grpc

    from mailwatch.v1 import mailbox_service_pb2

    raw_floor = _benchmark_module("raw_floor")
    say, control = ph.say, ph.control
    emails = raw_floor.floor_emails(len(ph.emails))
    count = args.latency_changes
    say(f"[1f] raw floor, history {'with' if SHAPES[shape] else 'without'} labelIds: the same {count} paced "
        f"inserts over {len(emails)} mailboxes of its own, through the bare libraries (benchmarks/raw_floor.py)")
    started = time.monotonic()
    await asyncio.to_thread(control.configure, history_label_ids=SHAPES[shape])
    await asyncio.to_thread(control.create_mailboxes, emails)
    key = await asyncio.to_thread(control.create_service_account_key, name="rawfloor", project_id=PROJECT,
                                  delegate_domains=[raw_floor.FLOOR_DOMAIN])
    await asyncio.to_thread(subscriber.create_subscription, name=FLOOR_SUBSCRIPTION, topic=TOPIC,
                            ack_deadline_seconds=60)
    floor = None
    try:
        floor, target = await asyncio.to_thread(start_floor, key, FLOOR_SUBSCRIPTION)
        async with grpc.aio.insecure_channel(target) as channel:
            ledger = channel.unary_unary(f"/{raw_floor.SERVICE}/Ledger")
            call = channel.unary_stream(f"/{raw_floor.SERVICE}/Changes",
                                        response_deserializer=mailbox_service_pb2.StreamChangesResponse.FromString)(b"")
            consumer = StreamConsumer()
            reader = asyncio.create_task(consumer.run(call))
            try:
                await consumer.wait_open(timeout=30)
                await asyncio.sleep(1.1)  # the watches' own notifications, and Gmail's 1/s/user window, pass
                meter = GmailMeter(control)
                await asyncio.to_thread(meter.start)
                cpu = CpuMeter({"raw floor": floor.pid}, postmaster=ph.cpu.postmaster)
                for service in services:
                    service.pause()
                try:
                    before = json.loads(await ledger(b"", timeout=10))
                    cpu.start()
                    sent, _ = await _paced_inserts(control, emails, count, args.latency_spacing, "floor")
                    missing = await consumer.wait_for(sent, timeout=30)
                    summary = cpu.summary()
                    after = json.loads(await ledger(b"", timeout=10))
                finally:
                    for service in services:
                        service.resume()
                usage = await asyncio.to_thread(meter.read)
            finally:
                call.cancel()
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
    finally:
        if floor is not None and floor.stop() not in (0, None):
            print(f"--- raw floor log tail:\n{floor.tail()}", file=sys.stderr)
        await asyncio.to_thread(subscriber.delete_subscription, subscription=FLOOR_SUBSCRIPTION)
    if missing:
        say(f"    MISSING: {len(missing)} changes never reached the floor's stream")
    say(f"    Gmail: {usage.describe()}")
    counts = {name: n - before["counts"].get(name, 0) for name, n in after["counts"].items()}
    batches = counts.get("batches", 0)
    say(f"    raw floor: {batches} pulled batches (mean {counts.get('notifications', 0) / max(batches, 1):.1f} "
        f"msgs), {counts.get('reads', 0)} reads, {counts.get('stream writes', 0)} stream writes")
    say(f"    {summary}")
    floor_cpu = cpu.used["raw floor"] / count
    parts = {name: (after.get(name, 0.0) - before.get(name, 0.0)) / count for name in (
        *raw_floor.PARTS, raw_floor.LABELS_PART, raw_floor.Ledger.LOOP, raw_floor.Ledger.GLUE)}
    own = {name: parts[name] for name in (*raw_floor.PARTS, raw_floor.LABELS_PART)
           if name != raw_floor.LABELS_PART or parts[name]}
    named = sum(own.values())
    rest = floor_cpu - named
    threads = rest - parts[raw_floor.Ledger.LOOP] - parts[raw_floor.Ledger.GLUE]
    say(f"    raw floor CPU per change: {floor_cpu * 1000:.2f} ms ({_ms(own)}; rest {rest * 1000:.2f}: "
        f"event loop {parts[raw_floor.Ledger.LOOP] * 1000:.2f}, the floor's own code "
        f"{parts[raw_floor.Ledger.GLUE] * 1000:.2f}, other threads {threads * 1000:.2f}); "
        f"{(time.monotonic() - started):.1f}s of wall time in all")
    which = "service CPU per change" + (" (with its ingest replicas)" if len(services) > 1 else "")
    say(f"{which} {service_cpu * 1000:.2f} ms; the same round trips with the bare libraries "
        f"(history.list over httplib2 on a pool thread, where the service exchanges it on its loop) "
        f"{floor_cpu * 1000:.2f} ms ({_ms(own)}): mailwatch adds {(service_cpu - floor_cpu) * 1000:.2f} ms "
        f"(the floor is {floor_cpu / service_cpu:.0%} of the service's CPU); load average {_load()}")


def _ms(parts: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds * 1000:.2f}" for name, seconds in parts.items())


def _benchmark_module(name: str):
    """A module of this folder (benchmarks/ is not a package when this file runs as a script)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def phase_raw(args, publisher, subscriber, say: Report) -> float:
    """pubsub_pull.py's batched pull + acknowledge loop, no processing."""
    pubsub_pull = _benchmark_module("pubsub_pull")

    count = args.notifications
    topic, subscription = pubsub_pull._create(publisher, subscriber)
    publish_rate = pubsub_pull._publish(publisher, topic, count)
    rate = pubsub_pull._batched(subscriber, subscription, count, timeout=120.0)
    say(f"[3] raw emulator: published {count} at {publish_rate:,.0f} msg/s; "
        f"pull(max_messages=1000) + batched acknowledge, no processing: {rate:,.0f} msg/s")
    return rate


async def phase_ingest(args, ph: Phase, services: list[Child], publisher, database_url: str, tenant_id: str) -> float:
    import psycopg

    emails, say, consumer, control = ph.emails, ph.say, ph.consumer, ph.control

    per_mailbox = max(1, args.notifications // len(emails))
    count = per_mailbox * len(emails)
    say(f"[4] ingest: {count} notifications ({per_mailbox} per mailbox, each naming a real change) "
        f"published to {TOPIC} while the service is paused")
    # The changes first, with the simulator's own notifications off: ours are the only ones.
    await asyncio.to_thread(control.set_notification_faults, drop_fraction=1.0)
    try:
        changes: list[tuple[str, int]] = []
        keys: set[tuple[str, str]] = set()
        for offset in range(0, count, args.chunk):
            items = [{"emailAddress": emails[i % len(emails)], "labelIds": LABELS, "subject": f"ingest {i}"}
                     for i in range(offset, min(count, offset + args.chunk))]
            for result in await _insert(control, items):
                changes.append((result["emailAddress"], int(result["historyId"])))
                keys.add((result["emailAddress"], result["id"]))
        await asyncio.to_thread(control.flush_notifications, 10)
        targets: dict[str, int] = {}
        for email, history_id in changes:
            targets[email] = max(history_id, targets.get(email, 0))

        meter = GmailMeter(control)
        await asyncio.to_thread(ph.metrics.start)  # the HTTP side pauses with the service
        for service in services:
            service.pause()
        try:
            payloads = [json.dumps({"emailAddress": e, "historyId": h}, separators=(",", ":")).encode()
                        for e, h in changes]
            publish_started = time.perf_counter()
            await asyncio.to_thread(_publish_all, publisher, TOPIC, payloads)
            publish_rate = count / (time.perf_counter() - publish_started)
            await asyncio.to_thread(meter.start)
        finally:
            ph.cpu.start()
            started = time.monotonic()
            for service in services:
                service.resume()
            ph.profiler.start("ingest")
        done = await _wait_notified(psycopg, database_url, tenant_id, targets, timeout=120.0)
        cpu = ph.cpu.summary()
        profiled = ph.profiler.stop()
        elapsed = done - started
        rate = count / elapsed
        missing = await consumer.wait_for(keys, timeout=args.poll_interval * 2 + 60)
        await asyncio.sleep(1.0)
        usage = await asyncio.to_thread(meter.read)
        metrics_summary = await asyncio.to_thread(ph.metrics.summary)
    finally:
        await asyncio.to_thread(control.set_notification_faults, drop_fraction=0.0)
    say(f"    published at {publish_rate:,.0f} msg/s; all {count} recorded in {elapsed:.2f}s "
        f"-> {rate:,.0f} notifications/s ingested")
    if missing:
        say(f"    MISSING: {len(missing)} of these changes never reached the stream")
    say(f"    Gmail (syncs those notifications caused): {usage.describe()}")
    say(f"    Gmail per notification: {usage.per(count)}")
    say(f"    service: {metrics_summary}")
    say(f"    until all recorded: {cpu}")
    if profiled:
        say(f"    {profiled}")
    return rate


def _publish_all(publisher, topic: str, payloads: list[bytes]) -> None:
    from concurrent import futures

    pending = [publisher.publish(topic, payload) for payload in payloads]
    futures.wait(pending)
    for future in pending:
        future.result()


async def _wait_notified(psycopg, database_url: str, tenant_id: str, targets: dict[str, int],
                         timeout: float) -> float:
    """monotonic time at which every mailbox's notified_history_id reached its target."""
    query = """
        SELECT count(*) FROM mailboxes AS m
        JOIN unnest(%s::text[], %s::bigint[]) AS t(email_address, history_id) USING (email_address)
        WHERE m.tenant_id = %s AND m.notified_history_id >= t.history_id
    """
    params = (list(targets), list(targets.values()), tenant_id)
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            now = time.monotonic()
            row = await (await conn.execute(query, params)).fetchone()
            if row[0] >= len(targets):
                return now  # the moment this query started: everything was recorded by then
            await asyncio.sleep(0.01)
    raise TimeoutError(f"ingest did not record every notification within {timeout:.0f}s")


# --- orchestration ---------------------------------------------------------------------------------------


async def run_phases(args, *, target: str, sim_url: str, metrics_url: str, database_url: str, service: Child,
                     ingest_replicas: list[Child], cpu: CpuMeter, publisher, subscriber, say: Report,
                     start_floor) -> None:
    import grpc
    from google.protobuf.duration_pb2 import Duration

    from mailwatch_devstack.gmail_sim import SimulatorControl
    from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc

    control = SimulatorControl(sim_url)
    async with grpc.aio.insecure_channel(target) as channel:
        mailboxes = mailbox_service_pb2_grpc.MailboxServiceStub(channel)
        tenant = await tenant_key(channel, "bench", operator_token=OPERATOR_TOKEN)
        auth = tenant.auth

        emails = [f"user{i:04d}@bench.test" for i in range(args.mailboxes)]
        await asyncio.to_thread(control.create_mailboxes, emails)
        key = json.dumps(await asyncio.to_thread(control.create_service_account_key, name="mailwatch-bench", project_id=PROJECT,
                                                  delegate_domains=["bench.test"]))
        slots = asyncio.Semaphore(8)

        async def register(email: str, metadata: bool = False) -> None:
            from mailwatch.v1 import resources_pb2

            async with slots:
                await mailboxes.RegisterMailbox(
                    mailbox_service_pb2.RegisterMailboxRequest(
                        email_address=email,
                        service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=key),
                        metadata=resources_pb2.MetadataOptions(enabled=True) if metadata else None,
                    ),
                    metadata=auth, timeout=60,
                )

        started = time.monotonic()
        await asyncio.gather(*(register(email) for email in emails))
        say(f"registered {len(emails)} mailboxes in {time.monotonic() - started:.2f}s")

        consumer = StreamConsumer()
        call = mailboxes.StreamChanges(
            mailbox_service_pb2.StreamChangesRequest(
                start_position=mailbox_service_pb2.START_POSITION_NOW, max_batch_size=1000,
                heartbeat_interval=Duration(seconds=1),
            ),
            metadata=auth,
        )
        reader = asyncio.create_task(consumer.run(call))
        try:
            await consumer.wait_open(timeout=30)  # first heartbeat: the stream's start position is fixed
            await asyncio.sleep(1.0)  # the watches' own notifications settle
            profiler = Profiler(args.profile, service.pid)
            phase = Phase(control, consumer, ServiceMetrics(metrics_url), cpu, emails, say, profiler)
            phases = set(args.phases.split(","))
            if "latency" in phases:
                shapes = args.history_shapes.split(",")
                service_cpu: dict[str, float] = {}  # per change, ingest replicas included
                for shape in shapes:
                    await phase_latency(args, phase, shape)
                    service_cpu[shape] = sum(cpu.used.get(child.name, 0.0)
                                             for child in (service, *ingest_replicas)) / args.latency_changes
                if not args.no_floor:
                    await phase_floor(args, phase, shape=shapes[0], service_cpu=service_cpu[shapes[0]],
                                      services=[service, *ingest_replicas], subscriber=subscriber,
                                      start_floor=start_floor)
            if "metadata" in phases and args.metadata_changes:
                await phase_metadata(args, phase, register)
            if "throughput" in phases:
                await phase_throughput(args, phase)
            if "ingest" in phases:
                raw = await asyncio.to_thread(phase_raw, args, publisher, subscriber, say)
                ingest = await phase_ingest(args, phase, [service, *ingest_replicas], publisher, database_url,
                                            tenant.tenant_id)
                say(f"ingest / raw emulator pull+ack: {ingest:,.0f} / {raw:,.0f} = {ingest / raw:.2f}")
            say(f"stream: {consumer.events} events in {consumer.responses} responses "
                f"({consumer.heartbeats} heartbeats)")
        finally:
            call.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def _start_floor(args, key: dict, subscription: str, *, database_url: str, sim_url: str, emulator_host: str,
                 logdir: Path, children: list[Child]) -> tuple[Child, str]:
    """benchmarks/raw_floor.py in its own process, stopped with the other children; (it, its address)."""
    from mailwatch.database_url import libpq_url

    key_file = logdir / "rawfloor-key.json"
    key_file.write_text(json.dumps(key))
    floor = Child("raw-floor", [
        sys.executable, str(BENCHMARKS / "raw_floor.py"), "--database-url", libpq_url(database_url),
        "--sim-url", sim_url, "--topic", TOPIC, "--subscription", subscription, "--key-file", str(key_file),
        "--mailboxes", str(args.mailboxes), "--event-loop", args.event_loop,
    ], child_env({"PUBSUB_EMULATOR_HOST": emulator_host}), logdir)
    children.append(floor)
    return floor, floor.start(_benchmark_module("raw_floor").READY, timeout=120).group(1)


def _create_pubsub(publisher, subscriber) -> None:
    publisher.create_topic(name=TOPIC)
    subscriber.create_subscription(name=SUBSCRIPTION, topic=TOPIC, ack_deadline_seconds=60)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mailboxes", type=int, default=50, help="mailboxes registered (default 50)")
    parser.add_argument("--latency-changes", type=int, default=300,
                        help="paced single changes for the latency phase (default 300)")
    parser.add_argument("--latency-spacing", type=float, default=1.5,
                        help="seconds between two changes of one mailbox in the latency phase (default 1.5; "
                             "below 1 the simulator drops notifications, as Gmail does)")
    parser.add_argument("--history-shapes", default="labels,bare",
                        help="latency phase once per history shape: 'labels' (history messages carry their "
                             "labelIds, as Gmail's do) and/or 'bare' (id and threadId only, which the discovery "
                             "document allows); default both")
    parser.add_argument("--metadata-mailboxes", type=int, default=10,
                        help="mailboxes with message metadata (and as many plain ones) in phase 1b (default 10)")
    parser.add_argument("--metadata-changes", type=int, default=100,
                        help="inserts per group in phase 1b, 0 skips it (default 100)")
    parser.add_argument("--changes", type=int, default=10000, help="changes in the throughput phase (default 10000)")
    parser.add_argument("--chunk", type=int, default=500, help="messages per bulk simulator insert (default 500)")
    parser.add_argument("--notifications", type=int, default=20000,
                        help="notifications in the ingest phase and the raw emulator run (default 20000)")
    parser.add_argument("--poll-interval", type=float, default=5.0,
                        help="service MAILWATCH_POLL_INTERVAL_SECONDS: fallback sync of quiet mailboxes (default 5)")
    parser.add_argument("--sync-concurrency", type=int, default=16,
                        help="service MAILWATCH_SYNC_CONCURRENCY (default 16)")
    parser.add_argument("--ingest-replica", action="store_true",
                        help="ingest in a second `mailwatch serve` with MAILWATCH_ROLE=ingest (the first one "
                             "with MAILWATCH_ROLE=sync), as a deployment with ingest replicas runs")
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, default=EVENT_LOOPS[0],
                        help=f"service MAILWATCH_EVENT_LOOP (default {EVENT_LOOPS[0]})")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the raw floor after the latency phase (the same paced changes through the bare "
                             "libraries in benchmarks/raw_floor.py, next to the service's CPU per change)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the service and simulator logs")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated phases to run (default all: {','.join(PHASES)})")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample the service with py-spy during the latency and ingest phases; "
                             "collapsed stacks written to DIR/<phase>.txt")
    args = parser.parse_args()
    if not args.history_shapes or set(args.history_shapes.split(",")) - set(SHAPES):
        parser.error(f"--history-shapes: choose from {','.join(SHAPES)}")
    if set(args.phases.split(",")) - set(PHASES):
        parser.error(f"--phases: choose from {','.join(PHASES)}")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.mailboxes < 1 or args.changes < 1 or args.notifications < 1 or args.latency_changes < 1:
        parser.error("sizes must be positive")

    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    from mailwatch_devstack.ports import free_port

    say = Report()
    logdir = Path(tempfile.mkdtemp(prefix="mailwatch-bench-"))
    children: list[Child] = []
    failed = True
    with contextlib.ExitStack() as stack:
        try:
            postgres, database_url, emulator = start_postgres_and_emulator(stack)
            from google.cloud import pubsub_v1

            publisher = pubsub_v1.PublisherClient(
                batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000, max_latency=0.01)
            )
            stack.callback(publisher.api.transport.close)
            stack.callback(publisher.stop)
            subscriber = pubsub_v1.SubscriberClient()
            stack.callback(subscriber.close)
            _create_pubsub(publisher, subscriber)

            sim, sim_url = start_gmail_sim(emulator.host, logdir)
            children.append(sim)

            http_port = free_port()
            service_env = {
                **service_settings(database_url=database_url, sim_url=sim_url, http_port=http_port),
                "MAILWATCH_POLL_INTERVAL_SECONDS": str(args.poll_interval),
                "MAILWATCH_SYNC_CONCURRENCY": str(args.sync_concurrency),
                "MAILWATCH_EVENT_LOOP": args.event_loop,
            }
            ingest_replicas: list[Child] = []
            if args.ingest_replica:
                service_env["MAILWATCH_ROLE"] = "sync"
                replica_env = {**service_env, "MAILWATCH_ROLE": "ingest", "MAILWATCH_HTTP_LISTEN": ""}
                replica = Child("ingest-replica", [sys.executable, "-m", "mailwatch.cli", "serve"],
                                child_env({**replica_env, "PUBSUB_EMULATOR_HOST": emulator.host}), logdir)
                children.append(replica)
                replica.start(r"mailwatch serving on (\S+:\d+)")
                ingest_replicas.append(replica)
            service = Child("service", [sys.executable, "-m", "mailwatch.cli", "serve"],
                            child_env({**service_env, "PUBSUB_EMULATOR_HOST": emulator.host}), logdir)
            children.append(service)
            target = service.start(r"mailwatch serving on (\S+:\d+)").group(1)

            cpu = CpuMeter({"service": service.pid, **{r.name: r.pid for r in ingest_replicas},
                            "simulator": sim.pid, "emulator": emulator._process.pid},
                           postmaster=_postmaster_pid(postgres))
            say(f"machine: {os.cpu_count()} CPUs, load average {_load()} at start; Postgres {postgres.port}, emulator {emulator.host}, "
                f"simulator {sim_url} (pid {sim.pid}), service {target} (pid {service.pid})")
            say("service settings: " + shown_settings(service_env))
            say(f"sizes: --mailboxes {args.mailboxes} --latency-changes {args.latency_changes} "
                f"--latency-spacing {args.latency_spacing} --changes {args.changes} --chunk {args.chunk} "
                f"--notifications {args.notifications}")
            def start_floor(key: dict, subscription: str) -> tuple[Child, str]:
                return _start_floor(args, key, subscription, database_url=database_url, sim_url=sim_url,
                                    emulator_host=emulator.host, logdir=logdir, children=children)

            asyncio.run(run_phases(args, target=target, sim_url=sim_url,
                                   metrics_url=f"http://127.0.0.1:{http_port}/metrics", database_url=database_url,
                                   service=service, ingest_replicas=ingest_replicas, cpu=cpu, publisher=publisher,
                                   subscriber=subscriber, say=say, start_floor=start_floor))
            say(f"load average at the end: {_load()} (other processes on this host skew every figure)")
            failed = False
        except KeyboardInterrupt:
            print("interrupted; stopping everything", file=sys.stderr, flush=True)
        finally:
            stop_children(children, failed=failed, logdir=logdir, keep_logs=args.keep_logs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
