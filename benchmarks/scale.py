"""Many mailboxes: registration rate, scheduler tick cost, storage and memory per mailbox.

Starts its own peers and stops each by its pid on exit: a throwaway Postgres
(migrated), the Pub/Sub emulator (topic + the service's subscription), the
Gmail simulator and `mailwatch serve` as child processes (so the service, the
simulator and this load generator do not share one GIL). Then it creates
`--tenants` tenants (default 1) and registers mailboxes spread over them
round-robin (mailbox n is tenant n mod T's), all with one service-account key
with domain-wide delegation (each tenant stores it once, in its own
`sealed_credentials` row): the first `--single` with single RegisterMailbox
calls (`--concurrency` in flight), next to the raw peer (as many users.watch
calls straight to the simulator from this process, token grant included, same
concurrency); then through BatchRegisterMailboxes (one call per tenant and
1,000 addresses) up to `--api-mailboxes` (default 10,000, at least one per
tenant); beyond that by a direct INSERT that copies its
tenant's first registered row (new id and "bulk…" address, renewal slots
spread over the day; the copy references the tenant's one credential row, as
a registration does, so it adds no key) — the API path is what the
registration figures measure, the copies only grow the table. At each
checkpoint (default 1,000, 10,000, 100,000) it reports:

- registrations/s since the previous checkpoint (each one is a users.watch,
  a token grant for the mailbox's subject, and one transaction);
- one scheduler tick: the claims the workers run every loop, through the
  workers' own calls (`claim_renewals`, the poll's `mark_quiet_due`,
  `claim_syncs`; the sync and renewal claims give tenants turns, one index
  probe per tenant) at the workers' default batch sizes, with nothing due
  (so they change nothing; the fastest of 25, which other load on the host
  cannot shrink, and the p99 of the 25), and a renewal tick with 100
  renewals due across the tenants (claim + 100 users.watch + writes), run by
  a RenewWorker as a replica runs it (default concurrency) in this process
  (the service's own renew worker is off, so the two do not race for the
  same due mailboxes);
- Postgres rows and bytes per mailbox (`mailboxes` with its indexes plus its
  share of `sealed_credentials`, where each tenant's key is stored once — the
  run fails if the copies hold any other credential row — and the change log
  it has produced so far), after VACUUM ANALYZE;
- the service process's resident memory (VmRSS);
- renewals/day one replica sustains: the renew tick's rate over a day.

After the last checkpoint, a day of changes: `--day-sample` MESSAGE_ADDED rows
(default 1,000,000, a fiftieth of the 50 million a day a million mailboxes
make) are inserted directly into the change log as of eight days ago, spread
over 10,000 mailboxes of every tenant (each row in its mailbox's tenant); the report gives their bytes per change and per day of
50 million, then times the prune worker's own retention pass (`PruneWorker.run_once`)
removing them, whatever the log's layout (row DELETE in chunks, or dropping
whole partitions where the log is partitioned; the dropped day raises each
tenant's watermark, one index probe per tenant).

The fallback poll interval is set to a day (`POLL_INTERVAL`) so that 10,000
quiet mailboxes are not all synced during the run; its scan is still
measured at each checkpoint, with that interval.

    .venv/bin/python benchmarks/scale.py [--mailboxes 100000] [--checkpoints 1000,10000,100000] [--api-mailboxes 10000]
        [--tenants 1] [--day-sample 1000000]

All processes share this machine's cores: figures are for the whole stack on
one host.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import psycopg

from mailwatch_devstack.postgres import TemporaryPostgres
from mailwatch_devstack.pubsub_emulator import PubSubEmulator
from mailwatch.secrets import generate_key

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import NO_TENANT_LIMITS, _load  # noqa: E402 - also puts the repository root on sys.path
from tests.fixtures.factory import TenantKey, tenant_key  # noqa: E402
from tests.fixtures.processes import Child, child_env  # noqa: E402
from tests.fixtures.waiting import eventually  # noqa: E402

PROJECT = "mailwatch-scale"
OPERATOR_TOKEN = "scale-operator-token"
DOMAIN = "scale.example.com"
# The service's fallback poll interval in this run, and the poll scan's: no mailbox
# here is synced, so with the default 300 s every one would soon be due.
POLL_INTERVAL = timedelta(days=1)
INSERT_CHUNK = 10_000


@dataclass(frozen=True)
class Plan:
    """Who is who in a run: the addresses, whose (tenant index) and which way each is added."""

    emails: list[str]
    tenant_of: list[int]  # index into the tenants, round-robin: mailbox n is tenant n mod T's
    api_mailboxes: int  # the first this many through the API ("user…", on the simulator)

    def templates(self) -> list[str]:
        """Each tenant's first registered mailbox: what its direct-INSERT copies copy."""
        first: dict[int, str] = {}
        for email, tenant in zip(self.emails[:self.api_mailboxes], self.tenant_of):
            first.setdefault(tenant, email)
        return [first[t] for t in sorted(first)]


def plan(mailboxes: int, api_mailboxes: int, tenants: int) -> Plan:
    """Mailboxes spread round-robin over `tenants`; addresses past `api_mailboxes` are
    only rows in Postgres (direct INSERT): "bulk…", never watched. Every tenant needs a
    registered mailbox (its credential row, and the row its copies copy)."""
    if tenants < 1:
        raise ValueError("--tenants must be at least 1")
    api_mailboxes = min(api_mailboxes, mailboxes)
    if api_mailboxes < tenants:
        raise ValueError(f"--api-mailboxes ({api_mailboxes}) must be at least --tenants ({tenants}): "
                         "each tenant registers one mailbox through the API before its rows are copied")
    emails = [f"{'user' if n < api_mailboxes else 'bulk'}{n:07d}@{DOMAIN}" for n in range(mailboxes)]
    return Plan(emails=emails, tenant_of=[n % tenants for n in range(mailboxes)], api_mailboxes=api_mailboxes)


async def _create_tenants(target: str, count: int, in_flight: int = 16) -> list[TenantKey]:
    """`count` tenants with an API key each, through AdminService (the operator token)."""
    slots = asyncio.Semaphore(in_flight)
    async with grpc.aio.insecure_channel(target) as channel:

        async def one(n: int) -> TenantKey:
            async with slots:
                return await tenant_key(channel, f"scale-{n:05d}", operator_token=OPERATOR_TOKEN)

        return list(await asyncio.gather(*(one(n) for n in range(count))))


async def _register_batches(target: str, key: dict, batches: list[tuple[TenantKey, list[str]]], in_flight: int) -> float:
    """Register each tenant's addresses with BatchRegisterMailboxes (at most 1,000 per call);
    returns the elapsed seconds."""
    from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc

    credential = mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(key))
    chunks = [(tenant, emails[i:i + 1000]) for tenant, emails in batches for i in range(0, len(emails), 1000)]
    slots = asyncio.Semaphore(in_flight)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = mailbox_service_pb2_grpc.MailboxServiceStub(channel)

        async def one(tenant: TenantKey, chunk: list[str]) -> None:
            async with slots:
                response = await stub.BatchRegisterMailboxes(
                    mailbox_service_pb2.BatchRegisterMailboxesRequest(email_addresses=chunk, service_account=credential),
                    metadata=tenant.auth, timeout=600,
                )
            failed = [r for r in response.results if r.status.code != 0]
            if failed:
                raise RuntimeError(f"{len(failed)} registrations failed, e.g. {failed[0]}")

        started = time.perf_counter()
        await asyncio.gather(*(one(tenant, chunk) for tenant, chunk in chunks))
        return time.perf_counter() - started


async def _raw_watch_rate(sim_url: str, key: dict, topic: str, emails: list[str], concurrency: int) -> float:
    """The raw peer: users.watch calls/s straight to the simulator (token grant + watch per
    address, as a registration makes them), no mailwatch in between."""
    from mailwatch.domain.models import LabelFilter, ServiceAccountCredential
    from mailwatch.config import GmailSettings
    from mailwatch.gmail.client import GmailClient

    gmail = GmailClient(GmailSettings(api_endpoint=sim_url, token_uri=f"{sim_url}/token"), max_workers=concurrency)
    slots = asyncio.Semaphore(concurrency)

    async def one(email: str) -> None:
        async with slots:
            await gmail.watch(ServiceAccountCredential(info=key, subject=email), email, topic=topic,
                              label_filter=LabelFilter())

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(email) for email in emails))
        return len(emails) / (time.perf_counter() - started)
    finally:
        gmail.close()


def _insert_directly(url: str, copies: list[tuple[str, str]], *, first: int = 0, chunk: int = INSERT_CHUNK) -> float:
    """Add mailboxes as copies of registered ones: each (address, template address) a new
    row of the template's tenant, new id and address, everything else the template's: its
    `sealed_credential_id` too, so a copy references its tenant's one credential row as a
    registration does and adds no key. Renewal slots are spread over the day by the
    mailbox's number (`first`: the first copy's), a second apart from an hour ahead (at a
    million, 12 a second: daily renewals' rate). The API path is the registration
    benchmark; this only builds the table."""
    with psycopg.connect(url, autocommit=True) as conn:
        columns = [row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'mailboxes' "
            "AND column_name NOT IN ('id', 'email_address', 'gmail_address', 'next_renewal_at') "
            "ORDER BY ordinal_position"
        )]
        copied = ", ".join(f"m.{c}" for c in columns)
        # A template address names one mailbox in a run (one tenant registers each address).
        ids = dict(conn.execute("SELECT email_address, id FROM mailboxes WHERE email_address = ANY(%s)",
                                (sorted({template for _, template in copies}),)).fetchall())
        started = time.perf_counter()
        for start in range(0, len(copies), chunk):
            addresses, templates = zip(*copies[start:start + chunk])
            conn.execute(
                f"INSERT INTO mailboxes (id, email_address, gmail_address, next_renewal_at, {', '.join(columns)}) "
                f"SELECT gen_random_uuid(), e.address, e.address, "
                f"now() + make_interval(secs => 3600 + (%s::bigint + e.n) %% 82800), {copied} "
                "FROM unnest(%s::text[], %s::uuid[]) WITH ORDINALITY AS e(address, template, n) "
                "JOIN mailboxes AS m ON m.id = e.template",
                (first + start, list(addresses), [ids[t] for t in templates]),
            )
        return time.perf_counter() - started


async def _register(target: str, key: dict, registrations: list[tuple[TenantKey, str]], concurrency: int) -> float:
    """Register each (tenant, address) with one RegisterMailbox call; returns the elapsed seconds."""
    from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc

    json_key = json.dumps(key)
    queue: asyncio.Queue[tuple[TenantKey, str]] = asyncio.Queue()
    for registration in registrations:
        queue.put_nowait(registration)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = mailbox_service_pb2_grpc.MailboxServiceStub(channel)

        async def worker() -> None:
            while not queue.empty():
                tenant, email = queue.get_nowait()
                await stub.RegisterMailbox(
                    mailbox_service_pb2.RegisterMailboxRequest(
                        email_address=email,
                        service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json_key),
                    ),
                    metadata=tenant.auth, timeout=60,
                )

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


async def _tick_ms(sessions, repeat: int = 25) -> dict[str, float]:
    """Milliseconds of each worker's claim with nothing due (so it changes nothing), made
    as the worker makes it (its own call, its default batch size; the sync worker claims
    as many as it has free slots, all of them when idle): fastest and p99 of `repeat`."""
    from mailwatch.config import SyncSettings
    from mailwatch.store import claims, renewal_claims, sync_claims
    from mailwatch.workers.poll import PollWorker
    from mailwatch.workers.renew import RenewWorker

    now = datetime.now(timezone.utc)
    lease = timedelta(seconds=SyncSettings().lease_seconds)
    renew_batch = inspect.signature(RenewWorker).parameters["batch_size"].default
    poll_batch = inspect.signature(PollWorker).parameters["batch_size"].default
    queries = {
        "renewal claim": lambda: renewal_claims.claim_renewals(sessions, now=now, lease=lease, limit=renew_batch),
        "poll scan": lambda: claims.mark_quiet_due(sessions, now=now, quiet_for=POLL_INTERVAL, limit=poll_batch),
        "sync claim": lambda: sync_claims.claim_syncs(sessions, owner="bench", now=now, lease=lease,
                                                      limit=SyncSettings().concurrency),
    }
    results = {}
    for name, query in queries.items():
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            found = await query()
            times.append((time.perf_counter() - started) * 1000)
            if found not in (0, []):
                raise RuntimeError(f"{name}: expected nothing due, got {found!r}")
        # The fastest run: other work on a shared host only ever adds time, so
        # the minimum is what the query itself costs (the p99 is printed too).
        results[name] = min(times)
        results[f"{name} (p99)"] = statistics.quantiles(times, n=100, method="inclusive")[98]
    return results


async def _renew_tick_ms(sessions, url: str, sim_url: str, secret_key: str, topic: str, due: int) -> tuple[float, int]:
    """Make `due` random registered mailboxes due (of any tenant), then time one RenewWorker
    tick renewing them at a replica's concurrency (the worker's default)."""
    from mailwatch.config import GmailSettings, SyncSettings
    from mailwatch.gmail.client import GmailClient
    from mailwatch.secrets import SecretBox
    from mailwatch.workers.renew import RenewWorker

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE mailboxes SET next_renewal_at = now() - interval '1 second' "
            "WHERE id IN (SELECT id FROM mailboxes WHERE email_address LIKE 'user%%' ORDER BY random() LIMIT %s)",
            (due,)
        )
    # The thread pool a replica gives its Gmail client (mailwatch.app).
    gmail = GmailClient(GmailSettings(api_endpoint=sim_url, token_uri=f"{sim_url}/token"),
                        max_workers=max(8, SyncSettings().concurrency * 2))
    try:
        worker = RenewWorker(sessions=sessions, gmail=gmail, secret_box=SecretBox([secret_key]), topic=topic,
                             batch_size=due)
        started = time.perf_counter()
        renewed = await worker.run_once()
        return (time.perf_counter() - started) * 1000, renewed
    finally:
        gmail.close()


# The log is partitioned: its bytes are its partitions' (the parent holds none).
_LOG_BYTES = "SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint FROM pg_partition_tree('change_events')"


async def _partitions_for_the_old_day(sessions) -> None:
    """The day partitions those rows belong in, as the prune worker made them when that day was near.

    Creating them takes the maintenance lock, which the service's own prune worker
    holds now and then: a try that finds it held creates nothing (the rows would then
    land in the default partition and be pruned row by row), so this waits until both exist."""
    from sqlalchemy import text

    from mailwatch.store import partitions

    first = (datetime.now(timezone.utc) - timedelta(days=9)).date()
    names = [partitions.day_partition_name(first + timedelta(days=n)) for n in range(2)]

    async def made() -> bool:
        await partitions.ensure_day_partitions(sessions, first, len(names))
        async with sessions() as session:
            return all([(await session.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name})).scalar_one()
                        for name in names])

    await eventually(made, timeout=60, what=f"partitions {', '.join(names)}")


def _day_of_changes(url: str, sample: int, *, mailboxes: int = 10_000) -> dict[str, float]:
    """Insert `sample` MESSAGE_ADDED rows observed eight days ago, spread over `mailboxes`
    mailboxes taken from every tenant alike, each row in its mailbox's tenant (message and
    thread ids, two labels, as a sync writes them); returns their bytes."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) change_events")
        before = conn.execute(_LOG_BYTES).fetchone()[0]
        started = time.perf_counter()
        for start in range(0, sample, 100_000):
            n = min(100_000, sample - start)
            # One day spread evenly, eight days back: all of it past the 7-day retention.
            conn.execute(
                "INSERT INTO change_events (tenant_id, mailbox_id, email_address, event_type, history_id, "
                "message_id, thread_id, label_ids, observed_at) "
                "SELECT m.tenants[1 + g %% cardinality(m.ids)], m.ids[1 + g %% cardinality(m.ids)], "
                "m.emails[1 + g %% cardinality(m.ids)], 'MESSAGE_ADDED', 1000 + g, "
                "lpad(to_hex(g), 16, '0'), lpad(to_hex(g - g %% 3), 16, '0'), ARRAY['INBOX', 'UNREAD'], "
                "now() - interval '8 days' - make_interval(secs => (g * 86400.0) / %s::bigint) "
                "FROM generate_series(%s::bigint, %s::bigint) AS g, "
                "(SELECT array_agg(tenant_id) AS tenants, array_agg(id) AS ids, array_agg(email_address) AS emails "
                # Each tenant's first mailboxes by address, the tenants alike.
                " FROM (SELECT tenant_id, id, email_address, "
                "       row_number() OVER (PARTITION BY tenant_id ORDER BY email_address) AS r FROM mailboxes) AS ranked "
                " WHERE r <= ceil(%s::numeric / (SELECT count(*) FROM tenants))) AS m",
                (sample, start, start + n - 1, mailboxes),
            )
        inserted = time.perf_counter() - started
        conn.execute("VACUUM (ANALYZE) change_events")
        after = conn.execute(_LOG_BYTES).fetchone()[0]
    per_change = (after - before) / sample
    return {"rows": sample, "insert rows/s": sample / inserted, "bytes per change": per_change,
            "GB per day of 50 M": per_change * 50e6 / 1e9}


async def _prune_ms(sessions, passes: int = 5) -> tuple[float, int, int, int]:
    """A retention pass of the prune worker (7 days) over what `_day_of_changes` left: its
    milliseconds, rows deleted one by one, partitions dropped, and how many passes it took.

    A pass that finds the maintenance lock held (the service's own prune worker) drops
    nothing; then the pass is made again, until nothing expired is left, and the figures
    are the passes' sums."""
    from sqlalchemy import text

    from mailwatch.config import PruneSettings
    from mailwatch.workers.prune import PruneWorker

    worker = PruneWorker(sessions=sessions, settings=PruneSettings(enabled=True, retention_hours=7 * 24))
    elapsed = 0.0
    deleted = dropped = 0
    for made in range(1, passes + 1):
        started = time.perf_counter()
        result = await worker.run_once()
        elapsed += time.perf_counter() - started
        deleted, dropped = deleted + result.deleted, dropped + len(result.partitions_dropped)
        async with sessions() as session:
            left = (await session.execute(text(
                "SELECT count(*) FROM change_events WHERE observed_at < now() - interval '7 days'"))).scalar_one()
        if not left:
            return elapsed * 1000, deleted, dropped, made
    raise RuntimeError(f"{passes} prune passes left {left:,} expired change-log rows")


def _storage(url: str) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        # sealed_credentials too: each registration batch rewrites its tenant's row (a fresh
        # seal under the current key), leaving a dead version for autovacuum each time.
        conn.execute("VACUUM (ANALYZE) mailboxes, change_events, sealed_credentials")
        count = conn.execute("SELECT count(*) FROM mailboxes").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM change_events").fetchone()[0]
        heap, total = conn.execute(
            "SELECT pg_table_size('mailboxes'), pg_total_relation_size('mailboxes')"
        ).fetchone()
        # The log is partitioned: its bytes are its partitions' (the parent holds none).
        log_total = conn.execute(_LOG_BYTES).fetchone()[0]
        # The tenants' keys, stored once per tenant and key (migration 0017).
        sealed = conn.execute("SELECT pg_total_relation_size('sealed_credentials')").fetchone()[0]
        tenants, sealed_rows, referenced = conn.execute(
            "SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM sealed_credentials), "
            "(SELECT count(DISTINCT sealed_credential_id) FROM mailboxes)").fetchone()
    # One key for every tenant here: one row per tenant, each referenced by all of its mailboxes.
    if not sealed_rows == referenced == tenants:
        raise RuntimeError(f"expected one credential row per tenant ({tenants}), found {sealed_rows} "
                           f"rows of which mailboxes reference {referenced}")
    return {
        "mailboxes": count,
        "mailbox row+toast bytes": heap / count,
        "mailbox bytes incl. indexes": (total + sealed) / count,
        "sealed credential rows": sealed_rows,
        "sealed credentials bytes (all tenants)": sealed,
        "change-log rows per mailbox": events / count,
        "change-log bytes per mailbox": log_total / count,
    }


async def _settle(url: str, registered: int, timeout: float = 5.0) -> int:
    """Let in-flight ingest finish; returns how many of the mailboxes registered through the
    API ("user…": the copies are never watched, and copy their template's notification time)
    have recorded a notification.

    Gmail notifies as soon as `users.watch` returns, before RegisterMailbox
    has stored the mailbox, so most first notifications find no mailbox and
    are acked as unknown. That costs nothing (they announce no change), but it
    means this count stays well below `registered`.
    """
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(url, autocommit=True) as conn:
            notified = conn.execute("SELECT count(*) FROM mailboxes WHERE last_notification_at IS NOT NULL "
                                    "AND email_address LIKE 'user%%'").fetchone()[0]
        if notified >= registered or time.monotonic() > deadline:
            return notified
        await asyncio.sleep(0.5)


async def run(args) -> None:
    from google.cloud import pubsub_v1

    from mailwatch_devstack.gmail_sim import SimulatorControl
    from mailwatch.store import create_engine, session_factory
    from mailwatch.store.migrate import upgrade

    logdir = Path(tempfile.mkdtemp(prefix="mailwatch-scale-"))
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    checkpoints = [c for c in checkpoints if c <= args.mailboxes] or [args.mailboxes]
    who = plan(args.mailboxes, args.api_mailboxes, args.tenants)  # refuses a bad mix before starting anything
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
                    child_env({}), logdir)
        sim_url = sim.start(r"gmail-sim listening on (\S+)").group(1)
        stack.callback(sim.stop)
        control = SimulatorControl(sim_url)

        secret_key = generate_key()
        service = Child("service", [sys.executable, "-m", "mailwatch.cli", "serve"], child_env({
            "MAILWATCH_DATABASE_URL": url,
            "MAILWATCH_SECRET_KEYS": secret_key,
            "MAILWATCH_OPERATOR_TOKEN": OPERATOR_TOKEN,
            **NO_TENANT_LIMITS,
            "MAILWATCH_LISTEN": "127.0.0.1:0",
            "MAILWATCH_GMAIL_API_ENDPOINT": sim_url,
            "MAILWATCH_GOOGLE_TOKEN_URI": f"{sim_url}/token",
            "MAILWATCH_PUBSUB_TOPIC": topic,
            "MAILWATCH_PUBSUB_SUBSCRIPTIONS": subscription,
            "MAILWATCH_LOG_FORMAT": "text",
            "MAILWATCH_LOG_LEVEL": "WARNING",
            "MAILWATCH_POLL_INTERVAL_SECONDS": str(int(POLL_INTERVAL.total_seconds())),
            "MAILWATCH_RENEW_ENABLED": "false",
        }), logdir)
        match = service.start(r"mailwatch serving on (\S+):(\d+)")
        stack.callback(service.stop)
        target = f"127.0.0.1:{match.group(2)}"
        print(f"peers up (logs in {logdir}); service pid {service.process.pid}, RSS {service.rss_mib():.0f} MiB",
              flush=True)

        started = time.perf_counter()
        tenants = await _create_tenants(target, args.tenants)
        print(f"{len(tenants)} tenants created through AdminService in {time.perf_counter() - started:.1f} s", flush=True)
        key = control.create_service_account_key(project_id=PROJECT, delegate_domains=[DOMAIN])
        emails, tenant_of = who.emails, who.tenant_of
        for start in range(0, who.api_mailboxes, 2000):
            control.create_mailboxes(emails[start:min(start + 2000, who.api_mailboxes)])
        templates = who.templates()

        def by_tenant(first: int, end: int) -> list[tuple[TenantKey, list[str]]]:
            grouped: dict[int, list[str]] = {}
            for n in range(first, end):
                grouped.setdefault(tenant_of[n], []).append(emails[n])
            return [(tenants[t], addresses) for t, addresses in grouped.items()]

        engine = create_engine(url, pool_size=4)
        sessions = session_factory(engine)
        rows = []
        done = 0
        try:
            # Registration through the API: single calls for the first --single, then batches.
            single = emails[:min(args.single, who.api_mailboxes)]
            cpu = service.cpu_seconds()
            elapsed = await _register(target, key, [(tenants[tenant_of[n]], email) for n, email in enumerate(single)],
                                      args.concurrency)
            cpu = service.cpu_seconds() - cpu
            done = len(single)
            print(f"RegisterMailbox x{len(single)}, {args.concurrency} in flight: {len(single) / elapsed:.0f} "
                  f"registrations/s, service CPU {cpu / len(single) * 1000:.1f} ms each (load average {_load()})",
                  flush=True)
            raw_emails = [f"raw{n:05d}@scale.example.com" for n in range(len(single))]
            control.create_mailboxes(raw_emails)
            sim_cpu = sim.cpu_seconds()
            raw_rate = await _raw_watch_rate(sim_url, key, topic, raw_emails, args.concurrency)
            sim_cpu = sim.cpu_seconds() - sim_cpu
            # The simulator is one process: at ~1 CPU-s per second it is what caps the rate.
            print(f"raw peer: users.watch straight to the simulator, {args.concurrency} in flight: {raw_rate:.0f}/s, "
                  f"simulator CPU {sim_cpu / len(raw_emails) * 1000:.1f} ms each (token grant + watch; "
                  f"load average {_load()})", flush=True)
            for checkpoint in checkpoints:
                rate = float("nan")  # registrations/s through the API; none at a checkpoint of copies only
                through_api = range(done, min(checkpoint, who.api_mailboxes))
                if through_api:
                    cpu, sim_cpu = service.cpu_seconds(), sim.cpu_seconds()
                    batches = by_tenant(through_api.start, through_api.stop)
                    elapsed = await _register_batches(target, key, batches, args.batches_in_flight)
                    n = len(through_api)
                    rate = n / elapsed
                    print(f"registered {through_api.stop}: {rate:.0f}/s by BatchRegisterMailboxes ({len(batches)} "
                          f"tenants; service CPU {(service.cpu_seconds() - cpu) / n * 1000:.1f} ms each, simulator CPU "
                          f"{(sim.cpu_seconds() - sim_cpu) / n * 1000:.1f} ms each (token grant + getProfile + watch); "
                          f"{n} in {elapsed:.1f} s; raw watch {raw_rate:.0f}/s, ratio {rate / raw_rate:.2f}; "
                          f"load average {_load()})", flush=True)
                copied = range(max(done, who.api_mailboxes), checkpoint)
                if copied:
                    elapsed = _insert_directly(url, [(emails[n], templates[tenant_of[n]]) for n in copied],
                                               first=copied.start)
                    print(f"registered {checkpoint}: {len(copied) / elapsed:.0f}/s by direct INSERT (not the API; "
                          f"{len(copied)} in {elapsed:.1f} s; load average {_load()})", flush=True)
                done = checkpoint
                registered = min(done, who.api_mailboxes)
                notified = await _settle(url, registered)
                print(f"  watch notifications ingested for {notified} of the {registered} mailboxes registered "
                      "through the API", flush=True)
                # VACUUM ANALYZE first (in _storage), as autovacuum would have done after a bulk load:
                # measured straight after 900,000 direct inserts, the ticks read a table with stale
                # statistics and an unset visibility map, which no running deployment has.
                storage = _storage(url)  # before the renew tick adds its WATCH_RENEWED events
                ticks = await _tick_ms(sessions)
                renew_ms, renewed = await _renew_tick_ms(sessions, url, sim_url, secret_key, topic, args.due)
                rss = service.rss_mib()
                rows.append((done, rate, ticks, renew_ms, renewed, storage, rss, _load()))
                print("  tick (nothing due): " + ", ".join(f"{k} {v:.2f} ms" for k, v in ticks.items())
                      + f"; renew tick with {renewed} due: {renew_ms:.0f} ms "
                      f"(sustains {renewed / renew_ms * 1000 * 86400:,.0f} renewals/day)", flush=True)
                print("  storage: " + ", ".join(f"{k} {v:.1f}" for k, v in storage.items()), flush=True)
                print(f"  service RSS: {rss:.0f} MiB", flush=True)
            if args.day_sample:
                await _partitions_for_the_old_day(sessions)
                day = _day_of_changes(url, args.day_sample)
                print(f"a day of changes: {day['rows']:,} rows at {day['insert rows/s']:,.0f}/s (direct INSERT), "
                      f"{day['bytes per change']:.0f} bytes per change incl. indexes, "
                      f"{day['GB per day of 50 M']:.1f} GB per day of 50 million (load average {_load()})", flush=True)
                prune_ms, deleted, dropped, passes = await _prune_ms(sessions)
                print(f"prune of that day: {dropped} day partitions dropped, {deleted:,} rows deleted one by one, "
                      f"in {prune_ms / 1000:.1f} s ({passes} pass{'es' if passes > 1 else ''}; load average {_load()})",
                      flush=True)
        finally:
            await engine.dispose()

    print()
    print(f"{args.tenants:,} tenants, mailboxes spread over them round-robin; ticks with nothing due, "
          "fastest of 25 (p99)")
    print("| mailboxes | batch registrations/s | tick: renewal claim | tick: poll scan | tick: sync claim "
          f"| renew tick, {args.due} due (renewals/day one replica) | mailbox bytes (incl. indexes) "
          "| change-log rows / bytes per mailbox | service RSS | load average |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")

    def tick(ticks: dict, name: str) -> str:
        return f"{ticks[name]:.2f} ms ({ticks[f'{name} (p99)']:.1f})"

    for done, rate, ticks, renew_ms, renewed, storage, rss, load in rows:
        print(f"| {done:,} | {rate:.0f} | {tick(ticks, 'renewal claim')} | {tick(ticks, 'poll scan')} "
              f"| {tick(ticks, 'sync claim')} | {renew_ms:.0f} ms ({renewed / renew_ms * 1000 * 86400:,.0f}) "
              f"| {storage['mailbox bytes incl. indexes']:.0f} "
              f"| {storage['change-log rows per mailbox']:.2f} / {storage['change-log bytes per mailbox']:.0f} "
              f"| {rss:.0f} MiB | {load} |")
    first, last = rows[0][2], rows[-1][2]
    print("tick growth (fastest of 25) from the first to the last checkpoint: " + ", ".join(
        f"{name} {last[name] / first[name]:.2f}x" for name in first if "p99" not in name))
    done, renew_ms, renewed = rows[-1][0], rows[-1][3], rows[-1][4]
    print(f"renewals a day: one replica sustains {renewed / renew_ms * 1000 * 86400:,.0f} at {done:,} mailboxes, "
          f"against the {done:,} needed (one renewal per mailbox a day)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=100_000)
    parser.add_argument("--checkpoints", default="1000,10000,100000")
    parser.add_argument("--api-mailboxes", type=int, default=10_000,
                        help="register this many through the API (BatchRegisterMailboxes); beyond, insert rows directly")
    parser.add_argument("--tenants", type=int, default=1,
                        help="spread the mailboxes over this many tenants (round-robin); at most --api-mailboxes")
    parser.add_argument("--single", type=int, default=500,
                        help="register this many first with single RegisterMailbox calls (and as many raw watches)")
    parser.add_argument("--batches-in-flight", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64, help="single RegisterMailbox calls in flight")
    parser.add_argument("--due", type=int, default=100, help="renewals due in the measured renew tick")
    parser.add_argument("--day-sample", type=int, default=1_000_000,
                        help="change-log rows of a day inserted (eight days old) and pruned after the last checkpoint; 0: none")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
