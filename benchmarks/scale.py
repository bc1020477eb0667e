"""Many mailboxes: registration rate, scheduler tick cost, storage and memory per mailbox.

Starts its own peers and stops each by its pid on exit: a throwaway Postgres
(migrated), the Pub/Sub emulator (topic + the service's subscription), the
Gmail simulator and `mailwatch serve` as child processes (so the service, the
simulator and this load generator do not share one GIL). Then, through the
public API, it registers N mailboxes (one tenant, one service-account key
with domain-wide delegation, `--concurrency` RegisterMailbox calls in
flight), and at each checkpoint (default 1,000 and 10,000 registered) reports:

- registrations/s since the previous checkpoint (each one is a users.watch,
  a token grant for the mailbox's subject, and one transaction);
- one scheduler tick: the due-time queries the workers run every loop — the
  renewal claim, the fallback-poll scan and the sync claim — with nothing
  due (each in a transaction that is rolled back; median of 25), and a
  renewal tick with 100 renewals due (claim + 100 users.watch + writes), run
  by a RenewWorker in this process (the service's own renew worker is off,
  so the two do not race for the same due mailboxes);
- Postgres rows and bytes per mailbox (`mailboxes` with its indexes, and the
  change log it has produced so far), after VACUUM ANALYZE;
- the service process's resident memory (VmRSS).

The fallback poll interval is set to a day so that 10,000 quiet mailboxes are
not all synced during the run; its scan is still measured at each checkpoint.

    /work/venv/bin/python benchmarks/scale.py [--mailboxes 10000] [--checkpoints 1000,10000] [--concurrency 64]

All processes share this machine's cores: figures are for the whole stack on
one host.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import psycopg

from mailwatch.devstack.postgres import TemporaryPostgres
from mailwatch.devstack.pubsub_emulator import PubSubEmulator
from mailwatch.secrets import generate_key

PROJECT = "mailwatch-scale"
OPERATOR_TOKEN = "scale-operator-token"


class Child:
    """A child process whose output goes to a log file; stopped by its own pid."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log_path = logdir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self, ready: str, timeout: float = 60.0) -> re.Match:
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        found: list[re.Match] = []
        event = threading.Event()

        def pump() -> None:
            for line in self.process.stdout:
                self._log.write(line)
                self._log.flush()
                if not found and (match := re.search(ready, line)):
                    found.append(match)
                    event.set()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout
        while not event.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start; see {self.log_path}")
        return found[0]

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        self._pump.join(timeout=5)
        self.process.stdout.close()
        self._log.close()


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILWATCH_")}
    env.update(extra)
    return env


async def _admin_key(target: str) -> str:
    from mailwatch.v1 import admin_service_pb2, admin_service_pb2_grpc

    operator = [("authorization", f"Bearer {OPERATOR_TOKEN}")]
    async with grpc.aio.insecure_channel(target) as channel:
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        tenant = await admin.CreateTenant(admin_service_pb2.CreateTenantRequest(name="scale"), metadata=operator)
        created = await admin.CreateApiKey(admin_service_pb2.CreateApiKeyRequest(tenant_id=tenant.id),
                                           metadata=operator)
    return created.key


async def _register(target: str, api_key: str, key: dict, emails: list[str], concurrency: int) -> float:
    """Register `emails`; returns the elapsed seconds."""
    from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc

    auth = [("authorization", f"Bearer {api_key}")]
    json_key = json.dumps(key)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for email in emails:
        queue.put_nowait(email)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = mailbox_service_pb2_grpc.MailboxServiceStub(channel)

        async def worker() -> None:
            while not queue.empty():
                email = queue.get_nowait()
                await stub.RegisterMailbox(
                    mailbox_service_pb2.RegisterMailboxRequest(
                        email_address=email,
                        service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json_key),
                    ),
                    metadata=auth, timeout=60,
                )

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


async def _tick_ms(sessions, repeat: int = 25) -> dict[str, float]:
    """Median milliseconds of each due-time query with nothing due (rolled back)."""
    from mailwatch.store import renewals, work

    now = datetime.now(timezone.utc)
    queries = {
        "renewal claim": lambda s: renewals.claim_due_renewals(s, now=now, lease=timedelta(minutes=1), limit=100),
        "poll scan": lambda s: work.mark_quiet_mailboxes_due(s, now=now, quiet_for=timedelta(hours=1), limit=1000),
        "sync claim": lambda s: work.claim_due_syncs(s, owner="bench", now=now, lease=timedelta(minutes=1), limit=50),
    }
    results = {}
    for name, query in queries.items():
        times = []
        for _ in range(repeat):
            async with sessions() as session:
                started = time.perf_counter()
                found = await query(session)
                await session.rollback()  # measure the work, change nothing
                times.append((time.perf_counter() - started) * 1000)
            if found not in (0, []):
                raise RuntimeError(f"{name}: expected nothing due, got {found!r}")
        results[name] = statistics.median(times)
    return results


async def _renew_tick_ms(sessions, url: str, sim_url: str, secret_key: str, topic: str, due: int) -> tuple[float, int]:
    """Make `due` random mailboxes due, then time one RenewWorker tick renewing them."""
    from mailwatch.gmail.client import GmailClient
    from mailwatch.secrets import SecretBox
    from mailwatch.workers.renew import RenewWorker

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE mailboxes SET next_renewal_at = now() - interval '1 second' "
            "WHERE id IN (SELECT id FROM mailboxes ORDER BY random() LIMIT %s)", (due,)
        )
    gmail = GmailClient(api_endpoint=sim_url, token_uri=f"{sim_url}/token", max_workers=16)
    try:
        worker = RenewWorker(sessions=sessions, gmail=gmail, secret_box=SecretBox([secret_key]), topic=topic,
                             batch_size=due, concurrency=16)
        started = time.perf_counter()
        renewed = await worker.run_once()
        return (time.perf_counter() - started) * 1000, renewed
    finally:
        gmail.close()


def _storage(url: str) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) mailboxes, change_events")
        count = conn.execute("SELECT count(*) FROM mailboxes").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM change_events").fetchone()[0]
        heap, total = conn.execute(
            "SELECT pg_table_size('mailboxes'), pg_total_relation_size('mailboxes')"
        ).fetchone()
        log_total = conn.execute("SELECT pg_total_relation_size('change_events')").fetchone()[0]
    return {
        "mailboxes": count,
        "mailbox row+toast bytes": heap / count,
        "mailbox bytes incl. indexes": total / count,
        "change-log rows per mailbox": events / count,
        "change-log bytes per mailbox": log_total / count,
    }


async def _settle(url: str, registered: int, timeout: float = 5.0) -> int:
    """Let in-flight ingest finish; returns how many mailboxes have recorded a notification.

    Gmail notifies as soon as `users.watch` returns, before RegisterMailbox
    has stored the mailbox, so most first notifications find no mailbox and
    are acked as unknown. That costs nothing (they announce no change), but it
    means this count stays well below `registered`.
    """
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(url, autocommit=True) as conn:
            notified = conn.execute("SELECT count(*) FROM mailboxes WHERE last_notification_at IS NOT NULL").fetchone()[0]
        if notified >= registered or time.monotonic() > deadline:
            return notified
        await asyncio.sleep(0.5)


async def run(args) -> None:
    from google.cloud import pubsub_v1

    from mailwatch.gmail_sim import SimulatorControl
    from mailwatch.store import create_engine, session_factory
    from mailwatch.store.migrate import upgrade

    logdir = Path(tempfile.mkdtemp(prefix="mailwatch-scale-"))
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    checkpoints = [c for c in checkpoints if c <= args.mailboxes] or [args.mailboxes]
    with contextlib.ExitStack() as stack:
        postgres = TemporaryPostgres().start()
        stack.callback(postgres.stop)
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE mailwatch")
        url = postgres.url("mailwatch")
        upgrade(url)

        emulator = PubSubEmulator().start()
        stack.callback(emulator.stop)
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        topic = f"projects/{PROJECT}/topics/gmail"
        subscription = f"projects/{PROJECT}/subscriptions/mailwatch"
        with pubsub_v1.PublisherClient() as publisher:  # type: ignore[attr-defined]
            publisher.create_topic(name=topic)
        with pubsub_v1.SubscriberClient() as subscriber:
            subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=30)

        sim = Child("gmail-sim", [sys.executable, "-m", "mailwatch.cli", "gmail-sim", "--host", "127.0.0.1",
                                  "--port", "0", "--pubsub-emulator-host", emulator.host],
                    _child_env({}), logdir)
        sim_url = sim.start(r"gmail-sim listening on (\S+)").group(1)
        stack.callback(sim.stop)
        control = SimulatorControl(sim_url)

        secret_key = generate_key()
        service = Child("service", [sys.executable, "-m", "mailwatch.cli", "serve"], _child_env({
            "MAILWATCH_DATABASE_URL": url,
            "MAILWATCH_SECRET_KEYS": secret_key,
            "MAILWATCH_OPERATOR_TOKEN": OPERATOR_TOKEN,
            "MAILWATCH_LISTEN": "127.0.0.1:0",
            "MAILWATCH_GMAIL_API_ENDPOINT": sim_url,
            "MAILWATCH_GOOGLE_TOKEN_URI": f"{sim_url}/token",
            "MAILWATCH_PUBSUB_TOPIC": topic,
            "MAILWATCH_PUBSUB_SUBSCRIPTIONS": subscription,
            "MAILWATCH_LOG_FORMAT": "text",
            "MAILWATCH_LOG_LEVEL": "WARNING",
            "MAILWATCH_POLL_INTERVAL_SECONDS": "86400",
            "MAILWATCH_RENEW_ENABLED": "false",
        }), logdir)
        match = service.start(r"mailwatch serving on (\S+):(\d+)")
        stack.callback(service.stop)
        target = f"127.0.0.1:{match.group(2)}"
        print(f"peers up (logs in {logdir}); service pid {service.process.pid}, RSS {service.rss_mib():.0f} MiB",
              flush=True)

        api_key = await _admin_key(target)
        key = control.create_service_account_key(project_id=PROJECT)
        emails = [f"user{n:05d}@scale.example.com" for n in range(args.mailboxes)]
        for start in range(0, len(emails), 2000):
            control.create_mailboxes(emails[start:start + 2000])

        engine = create_engine(url, pool_size=4)
        sessions = session_factory(engine)
        rows = []
        done = 0
        try:
            for checkpoint in checkpoints:
                batch = emails[done:checkpoint]
                elapsed = await _register(target, api_key, key, batch, args.concurrency)
                done = checkpoint
                rate = len(batch) / elapsed
                print(f"registered {done}: {rate:.0f} registrations/s ({len(batch)} in {elapsed:.1f} s)", flush=True)
                notified = await _settle(url, done)
                print(f"  watch notifications ingested for {notified} of {done} mailboxes", flush=True)
                ticks = await _tick_ms(sessions)
                storage = _storage(url)  # before the renew tick adds its WATCH_RENEWED events
                renew_ms, renewed = await _renew_tick_ms(sessions, url, sim_url, secret_key, topic, args.due)
                rss = service.rss_mib()
                rows.append((done, rate, ticks, renew_ms, renewed, storage, rss))
                print("  tick (nothing due): " + ", ".join(f"{k} {v:.2f} ms" for k, v in ticks.items())
                      + f"; renew tick with {renewed} due: {renew_ms:.0f} ms", flush=True)
                print("  storage: " + ", ".join(f"{k} {v:.1f}" for k, v in storage.items()), flush=True)
                print(f"  service RSS: {rss:.0f} MiB", flush=True)
        finally:
            await engine.dispose()

    print()
    print("| registered | registrations/s | tick: renewal claim | tick: poll scan | tick: sync claim "
          f"| renew tick, {args.due} due | mailbox bytes (incl. indexes) | change-log rows / bytes per mailbox "
          "| service RSS |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for done, rate, ticks, renew_ms, renewed, storage, rss in rows:
        print(f"| {done:,} | {rate:.0f} | {ticks['renewal claim']:.2f} ms | {ticks['poll scan']:.2f} ms "
              f"| {ticks['sync claim']:.2f} ms | {renew_ms:.0f} ms | {storage['mailbox bytes incl. indexes']:.0f} "
              f"| {storage['change-log rows per mailbox']:.2f} / {storage['change-log bytes per mailbox']:.0f} "
              f"| {rss:.0f} MiB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=10_000)
    parser.add_argument("--checkpoints", default="1000,10000")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--due", type=int, default=100, help="renewals due in the measured renew tick")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
