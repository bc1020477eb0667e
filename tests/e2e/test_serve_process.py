"""`mailwatch serve` as an operator runs it: start-up checks and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mailwatch.secrets import generate_key
from mailwatch.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc, resources_pb2
from tests.fixtures.factory import register_at, service_account_request, tenant_key_at
from tests.fixtures.names import TEST_PROJECT
from tests.fixtures.processes import ServiceProcess, full_pipe, stop_once_handled
from tests.fixtures.service import service_settings

pytestmark = pytest.mark.e2e


SERVE = [sys.executable, "-m", "mailwatch.cli", "serve"]


def serve_env(env: dict[str, str]) -> dict[str, str]:
    """This process's environment without its MAILWATCH_* settings, plus `env`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MAILWATCH_")}, **env}


def run_serve(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        SERVE, env=serve_env(env),
        # Refusing to start costs about a second of CPU (the imports); on a loaded host that was
        # 46 s of wall time, so the wait is as long as the test's own timeout allows.
        capture_output=True, text=True, timeout=100,
    )


def base_env(database_url: str) -> dict[str, str]:
    return {
        "MAILWATCH_DATABASE_URL": database_url,
        "MAILWATCH_SECRET_KEYS": generate_key(),
        "MAILWATCH_PUBSUB_TOPIC": "projects/p/topics/t",
        "MAILWATCH_LISTEN": "127.0.0.1:0",
        "MAILWATCH_LOG_FORMAT": "text",
    }


BAD_CONFIGURATIONS = [
    ({"MAILWATCH_DATABASE_URL": None}, "MAILWATCH_DATABASE_URL is required"),
    ({"MAILWATCH_DATABASE_URL": "mysql://x/y"}, "MAILWATCH_DATABASE_URL must be a postgresql:// URL"),
    ({"MAILWATCH_LISTEN": "nowhere"}, "MAILWATCH_LISTEN must be HOST:PORT"),
    ({"MAILWATCH_GRACE_SECONDS": "soon"}, "MAILWATCH_GRACE_SECONDS must be a number"),
    ({"MAILWATCH_EVENT_LOOP": "trio"}, "MAILWATCH_EVENT_LOOP must be uvloop or asyncio"),
    ({"MAILWATCH_SYNC_ENABLED": "maybe"}, "MAILWATCH_SYNC_ENABLED must be true or false"),
    ({"MAILWATCH_PUBSUB_TOPIC": None}, "MAILWATCH_PUBSUB_TOPIC is required"),
    ({"MAILWATCH_SECRET_KEYS": None}, "MAILWATCH_SECRET_KEYS"),
    ({"MAILWATCH_SECRET_KEYS": "not-a-fernet-key"}, "MAILWATCH_SECRET_KEYS"),
    ({"MAILWATCH_TLS_CERT_FILE": "/nonexistent/tls.crt"}, "MAILWATCH_TLS_CERT_FILE and MAILWATCH_TLS_KEY_FILE go together"),
    ({"MAILWATCH_TLS_CERT_FILE": "/nonexistent/tls.crt", "MAILWATCH_TLS_KEY_FILE": "/nonexistent/tls.key"},
     "cannot read /nonexistent/tls.crt"),
]
#: How long the refusals, made at once, may take together on a loaded host.
REFUSALS_TIMEOUT = 250


def bad_env(database_url: str, change: dict) -> dict[str, str]:
    env = base_env(database_url)
    for key, value in change.items():
        if value is None:
            env.pop(key)
        else:
            env[key] = value
    return env


@pytest.fixture(scope="module")
def refusals(module_database_url) -> list[subprocess.CompletedProcess]:
    """`mailwatch serve` with each of BAD_CONFIGURATIONS, all started at once: a refusal is
    mostly the imports' CPU, so on two cores they overlap instead of queueing. A process
    still running at the deadline (one that did not refuse) is killed by its pid."""
    started = [
        subprocess.Popen(SERVE, env=serve_env(bad_env(module_database_url, change)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for change, _ in BAD_CONFIGURATIONS
    ]
    deadline = time.monotonic() + REFUSALS_TIMEOUT
    results = []
    try:
        for process in started:
            try:
                stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


@pytest.mark.timeout(REFUSALS_TIMEOUT + 60)  # the first case waits for all of them
@pytest.mark.parametrize("change,expected", BAD_CONFIGURATIONS)
def test_bad_configuration_stops_startup_with_one_line(refusals, change, expected):
    result = refusals[BAD_CONFIGURATIONS.index((change, expected))]
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_unmigrated_database_is_refused(empty_database_url):
    result = run_serve(base_env(empty_database_url))
    assert result.returncode == 2
    assert "mailwatch migrate" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("loop", [None, "uvloop", "asyncio"])
def test_sigterm_drains_and_exits_zero(database_url, loop):
    """On either event loop (unset: the default, uvloop), which the readiness line names, with
    the Gmail calls' transport (no proxy here: on the event loop)."""
    env = base_env(database_url) | ({"MAILWATCH_EVENT_LOOP": loop} if loop else {})
    service = ServiceProcess(env).start()
    try:
        ready = next(line for line in service.output if "mailwatch serving on" in line)
        assert ready.endswith(f"(event loop: {loop or 'uvloop'}, Gmail calls: event loop)")
        with grpc.insecure_channel(service.target) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert service.terminate(timeout=30) == 0
    finally:
        service.kill()



def test_sigterm_as_readiness_is_announced_drains_and_exits_zero(database_url):
    """The readiness line is printed only once SIGTERM drains: a service stopped at once by
    whoever waited for that line (a test, a supervisor) shuts down cleanly, not killed by
    the signal's default action. Its stdout is a full pipe, so it blocks in that print."""
    read_end, write_end = full_pipe()
    service = subprocess.Popen(SERVE, env=serve_env(base_env(database_url)), stdout=write_end,
                               stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    try:
        output = stop_once_handled(service, signal.SIGTERM, read_end, timeout=90,
                                   what="mailwatch serve handling SIGTERM (its readiness print blocked meanwhile)")
        assert service.wait(timeout=60) == 0, service.stderr.read()
        assert "mailwatch serving on" in output
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
        service.stderr.close()


async def test_sigterm_mid_traffic_exits_zero_and_logs_no_error(database_url, gmail_sim, pubsub_topic):
    """Shutdown noise: SIGTERM while Gmail changes keep coming (ingest pulling, the sync worker
    calling the simulator) and a consumer's stream is open: the stream is ended after the grace
    period, the process exits 0, and its log (INFO and up) holds no ERROR and no traceback."""
    address = "draining@example.com"
    settings = service_settings(database_url, gmail_sim.url, pubsub_topic["topic"], pubsub_topic["subscription"],
                                grace_seconds=0.5)
    gmail_sim.create_mailbox(address)
    service = ServiceProcess(settings.environment()).start()
    changing = threading.Event()
    changer = threading.Thread(target=_keep_changing, args=(gmail_sim, address, changing), daemon=True)
    try:
        auth = (await tenant_key_at(service.target, "draining")).auth
        request = service_account_request(address, gmail_sim.create_service_account_key(project_id=TEST_PROJECT))
        await register_at(service.target, auth, request)
        changer.start()
        async with grpc.aio.insecure_channel(service.target) as channel:
            call = mailbox_service_pb2_grpc.MailboxServiceStub(channel).StreamChanges(
                mailbox_service_pb2.StreamChangesRequest(start_position=mailbox_service_pb2.START_POSITION_EARLIEST),
                metadata=auth)
            added = 0
            while added < 3:  # changes are flowing through ingest and sync
                added += sum(e.type == resources_pb2.EVENT_TYPE_MESSAGE_ADDED for e in (await call.read()).events)
            service.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(_until_ended(call), 60)
        assert await asyncio.to_thread(service.process.wait, 60) == 0
    finally:
        changing.set()
        service.kill()
        if changer.is_alive():
            changer.join(30)
    output = "\n".join(service.output)
    assert "shutting down" in output  # the log is read (INFO and up)
    assert "Traceback" not in output and " ERROR " not in output, output


async def _until_ended(call) -> None:
    """Read the stream until the server ends it (a status, or EOF)."""
    with contextlib.suppress(grpc.aio.AioRpcError):
        while await call.read() is not grpc.aio.EOF:
            pass


def _keep_changing(sim, address: str, stop: threading.Event) -> None:
    """A new message every 50 ms until `stop` (its notifications go to the emulator as Gmail's do)."""
    while not stop.wait(0.05):
        sim.insert_message(address, label_ids=["INBOX"])
