"""`mailwatch serve` as an operator runs it: start-up checks and graceful shutdown."""

from __future__ import annotations

import os
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mailwatch.secrets import generate_key
from tests.fixtures.processes import ServiceProcess

pytestmark = pytest.mark.e2e


def run_serve(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAILWATCH_")}
    return subprocess.run(
        [sys.executable, "-m", "mailwatch.cli", "serve"], env={**clean, **env},
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


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"MAILWATCH_DATABASE_URL": None}, "MAILWATCH_DATABASE_URL is required"),
        ({"MAILWATCH_DATABASE_URL": "mysql://x/y"}, "MAILWATCH_DATABASE_URL must be a postgresql:// URL"),
        ({"MAILWATCH_LISTEN": "nowhere"}, "MAILWATCH_LISTEN must be HOST:PORT"),
        ({"MAILWATCH_GRACE_SECONDS": "soon"}, "MAILWATCH_GRACE_SECONDS must be a number"),
        ({"MAILWATCH_SYNC_ENABLED": "maybe"}, "MAILWATCH_SYNC_ENABLED must be true or false"),
        ({"MAILWATCH_PUBSUB_TOPIC": None}, "MAILWATCH_PUBSUB_TOPIC is required"),
        ({"MAILWATCH_SECRET_KEYS": None}, "MAILWATCH_SECRET_KEYS"),
        ({"MAILWATCH_SECRET_KEYS": "not-a-fernet-key"}, "MAILWATCH_SECRET_KEYS"),
        ({"MAILWATCH_TLS_CERT_FILE": "/nonexistent/tls.crt"}, "MAILWATCH_TLS_CERT_FILE and MAILWATCH_TLS_KEY_FILE go together"),
        ({"MAILWATCH_TLS_CERT_FILE": "/nonexistent/tls.crt", "MAILWATCH_TLS_KEY_FILE": "/nonexistent/tls.key"},
         "cannot read /nonexistent/tls.crt"),
    ],
)
def test_bad_configuration_stops_startup_with_one_line(database_url, change, expected):
    env = base_env(database_url)
    for key, value in change.items():
        if value is None:
            env.pop(key)
        else:
            env[key] = value
    result = run_serve(env)
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


def test_sigterm_drains_and_exits_zero(database_url):
    service = ServiceProcess(base_env(database_url)).start()
    try:
        with grpc.insecure_channel(service.target) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert service.terminate(timeout=30) == 0
    finally:
        service.kill()
