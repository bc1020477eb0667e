"""The gRPC server: create_server() builds it, serve() runs it with the workers.

create_server is kept apart from running it (as in grpc's own examples) so
tests bind port 0 and talk to it over a real channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2  # noqa: F401  (see SERVICE_NAMES)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mailwatch.api.admin import AdminServicer
from mailwatch.api.interceptors import AuthInterceptor, RateLimitInterceptor, server_interceptors
from mailwatch.api.mailboxes import MailboxServicer
from mailwatch.app import App
from mailwatch.clock import Clock
from mailwatch.config import ConfigError, Settings
from mailwatch.domain.errors import MailwatchError
from mailwatch.event_loop import running_loop_kind
from mailwatch.logs import configure_logging
from mailwatch.tls import server_credentials
from mailwatch.v1 import admin_service_pb2, admin_service_pb2_grpc, mailbox_service_pb2, mailbox_service_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    mailbox_service_pb2.DESCRIPTOR.services_by_name["MailboxService"].full_name,
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)
# Reflection answers from the process's default descriptor pool, which holds what is imported:
# error_details_pb2 puts the google.rpc detail messages our errors carry (ErrorInfo,
# BadRequest, RetryInfo, RequestInfo, ...) there, so grpcurl and other reflection clients
# decode a status's details instead of printing bytes.
# Streams can be long and carry batches of up to a thousand events.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def create_server(app: App) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A server with every service added and its port bound, not yet started."""
    auth = AuthInterceptor(app.sessions, operator_token=app.settings.operator_token)
    server = grpc.aio.server(
        interceptors=server_interceptors(auth, RateLimitInterceptor(app.usage_limits)),
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.http2.max_pings_without_data", 0),
        ],
    )
    mailbox_service_pb2_grpc.add_MailboxServiceServicer_to_server(
        MailboxServicer(app.sessions, app.registrations, app.messages, app.streamer, limits=app.usage_limits), server
    )
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(app.sessions, api_key_cache=auth.cache, secret_box=app.secret_box,
                      deployment_subscriptions=app.settings.pubsub.subscriptions, budgets=app.gmail.budgets,
                      limits=app.usage_limits), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    credentials = server_credentials(app.settings.tls)
    if credentials is None:
        port = server.add_insecure_port(app.settings.listen)
    else:
        port = server.add_secure_port(app.settings.listen, credentials)
    if port == 0:
        raise ConfigError(f"cannot listen on {app.settings.listen} (address in use or not local)")
    return server, port, health_servicer


async def set_health(health_servicer: health.aio.HealthServicer, status) -> None:
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, status)


@dataclass(frozen=True)
class Running:
    """A started process: its App (workers, sessions, HTTP side) and its bound gRPC port."""

    app: App
    server: grpc.aio.Server
    port: int


@contextlib.asynccontextmanager
async def running(settings: Settings, *, clock: Clock | None = None,
                  grace_seconds: float | None = None) -> AsyncIterator[Running]:
    """The one start/stop sequence, shared by `serve`, `mailwatch dev` and the tests.

    Start: the App (database checked), the gRPC server, health SERVING, then
    the workers, ingest and the HTTP side. Stop, in reverse: health NOT_SERVING
    (load balancers move away), the server stops accepting and finishes calls
    in flight within the grace period (default MAILWATCH_GRACE_SECONDS), then
    the App stops taking work and closes its connections.
    """
    app = await App.open(settings, clock=clock)
    try:
        server, port, health_servicer = create_server(app)
        await server.start()
        await set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
        await app.start()
        try:
            yield Running(app, server, port)
        finally:
            grace = settings.grace_seconds if grace_seconds is None else grace_seconds
            log.info("shutting down", extra={"grace_seconds": grace})
            await set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
            await server.stop(grace)
            await app.stop()
    finally:
        await app.close()


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; then stop accepting, finish in-flight calls
    within the grace period, stop the workers and exit 0."""
    configure_logging(settings.log)
    if not settings.pubsub.topic:
        raise ConfigError("MAILWATCH_PUBSUB_TOPIC is required (projects/PROJECT/topics/TOPIC Gmail publishes to)")
    server_credentials(settings.tls)  # unusable TLS files stop start-up before anything connects
    try:
        async with running(settings) as started:
            # Before readiness is announced: a SIGTERM from then on drains (it killed the
            # process outright while the heap was frozen and the line printed).
            stopping = on_stop_signals()
            freeze_startup_heap()
            host = settings.listen.rpartition(":")[0]
            loop = running_loop_kind()
            # "httplib2" when a proxy for Gmail is configured (gmail/transport.py speaks directly only).
            gmail = started.app.gmail.transport
            print(f"mailwatch serving on {host}:{started.port} (event loop: {loop}, Gmail calls: {gmail})", flush=True)
            log.info("serving", extra={"listen": f"{host}:{started.port}", "event_loop": loop, "gmail_calls": gmail})
            await stopping.wait()
    except MailwatchError as exc:
        print(f"mailwatch: {exc.message}", file=sys.stderr)
        return 2
    return 0


def freeze_startup_heap() -> None:
    """Keep what start-up allocated out of every later garbage collection.

    The modules, settings, protobuf descriptors and SQLAlchemy metadata of a
    started service are a few hundred thousand objects that live for ever, and
    an unfrozen full (gen-2) collection walks all of them: a pause of tens of
    milliseconds (docs/performance.md) that lands on the latency of whichever
    change is in flight. Frozen, a full collection walks only what was
    allocated since (gc.freeze, as CPython's docs suggest for servers).
    """
    gc.collect()
    gc.freeze()


def on_stop_signals() -> asyncio.Event:
    """An event that SIGTERM or SIGINT (Ctrl-C) sets from now on (instead of ending the process)."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    return stopping
