"""The TypeScript client's test world, run by the Node tests (test/world.ts).

Starts what the Python suite's end-to-end tests start: a throwaway Postgres
cluster (migrated database), the Gmail simulator over HTTP, and `mailwatch
serve` as a child process, then answers commands, one JSON object a line on
stdin, one answer a line on stdout:

    {"id": 1, "cmd": "restart_server", "args": {"mode": "kill"}}
    {"id": 1, "ok": true, "result": null}

Gmail notifications are not delivered (no Pub/Sub): the service's fallback
poll syncs every mailbox each second, which is the path a dropped
notification takes in production.

Everything it starts is stopped by its own pid on "stop", on end of input
(the Node process went away) and on SIGTERM/SIGINT.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import grpc
import psycopg

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))  # tests.fixtures: the Python suite's process and certificate helpers

from tests.fixtures.certificates import CertificateAuthority  # noqa: E402
from tests.fixtures.processes import ServiceProcess, child_env  # noqa: E402

from mailwatch_devstack.gmail_sim import GmailSimulator, SimulatorControl  # noqa: E402
from mailwatch_devstack.ports import free_port  # noqa: E402
from mailwatch_devstack.postgres import TemporaryPostgres  # noqa: E402
from mailwatch.config import Settings  # noqa: E402
from mailwatch.database_url import sqlalchemy_url  # noqa: E402
from mailwatch.secrets import generate_key  # noqa: E402
from mailwatch.v1 import admin_service_pb2, admin_service_pb2_grpc  # noqa: E402

PROJECT = "mailwatch-ts-tests"
TOPIC = f"projects/{PROJECT}/topics/gmail"
OPERATOR_TOKEN = "ts-tests-operator-token"


class World:
    def __init__(self) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="mailwatch-ts-world-"))
        self.scratch.chmod(0o755)
        self.postgres: TemporaryPostgres | None = None
        self.sim: GmailSimulator | None = None
        self.serve: ServiceProcess | None = None
        self.tls_serve: ServiceProcess | None = None
        self.tenant_counter = 0

    # --- start and stop -------------------------------------------------------

    def start(self) -> dict:
        self.postgres = TemporaryPostgres().start()
        with psycopg.connect(self.postgres.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE mailwatch")
        self.database_url = sqlalchemy_url(self.postgres.url("mailwatch"))
        subprocess.run(
            [sys.executable, "-m", "mailwatch.cli", "migrate", "--database-url", self.database_url],
            check=True, stdout=subprocess.DEVNULL,
        )
        self.sim = GmailSimulator(pubsub_emulator_host=None, default_project=PROJECT)
        self.sim_url = self.sim.start(host="127.0.0.1", port=0)
        self.control = SimulatorControl(self.sim_url)
        # One address and secret key for every run of the server: a restarted
        # server is the same deployment, and clients reconnect to it.
        self.settings = Settings.from_env(
            {},
            database_url=self.database_url,
            secret_keys=(generate_key(),),
            operator_token=OPERATOR_TOKEN,
            listen=f"127.0.0.1:{free_port()}",
            gmail_api_endpoint=self.sim_url,
            google_token_uri=f"{self.sim_url}/token",
            pubsub_topic=TOPIC,
            pubsub_subscriptions=(),
            log_format="text",
            stream_poll_seconds=2.0,
            poll_interval_seconds=1.0,
            sync_lease_seconds=3.0,  # a sync cut by a restart is taken up again soon
            grace_seconds=1.0,
        )
        self.serve = ServiceProcess(child_env(self.settings.environment())).start()
        return {"target": self.serve.target, "simUrl": self.sim_url, "project": PROJECT}

    def stop(self) -> None:
        for serve in (self.tls_serve, self.serve):
            if serve is not None:
                serve.kill()
        if self.sim is not None:
            self.sim.stop()
        if self.postgres is not None:
            self.postgres.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)

    # --- commands ---------------------------------------------------------------

    def new_tenant(self) -> dict:
        """A tenant and an API key of its own (AdminService, operator token)."""
        self.tenant_counter += 1
        operator = [("authorization", f"Bearer {OPERATOR_TOKEN}")]
        with grpc.insecure_channel(self.serve.target) as channel:
            admin = admin_service_pb2_grpc.AdminServiceStub(channel)
            tenant = admin.CreateTenant(
                admin_service_pb2.CreateTenantRequest(name=f"ts-{self.tenant_counter}"), metadata=operator, timeout=30
            )
            key = admin.CreateApiKey(admin_service_pb2.CreateApiKeyRequest(tenant_id=tenant.id), metadata=operator,
                                     timeout=30)
        return {"tenantId": tenant.id, "apiKey": key.key}

    def set_tenant_limits(self, tenant_id: str, **limits: int) -> None:
        """The tenant's own limits (AdminService.SetTenantLimits): streams, rpcs_per_second, registrations_per_minute."""
        operator = [("authorization", f"Bearer {OPERATOR_TOKEN}")]
        with grpc.insecure_channel(self.serve.target) as channel:
            admin_service_pb2_grpc.AdminServiceStub(channel).SetTenantLimits(
                admin_service_pb2.SetTenantLimitsRequest(tenant_id=tenant_id, **limits), metadata=operator, timeout=30)

    def restart_server(self, mode: str = "graceful") -> None:
        """SIGTERM (graceful) or SIGKILL (a crash), then the same server again."""
        self.stop_server(mode)
        self.start_server()

    def stop_server(self, mode: str = "graceful") -> None:
        if mode == "kill":
            self.serve.kill()
        else:
            self.serve.terminate()

    def start_server(self) -> None:
        self.serve = ServiceProcess(child_env(self.settings.environment())).start()

    def restart_postgres(self) -> None:
        self.postgres.restart()

    def stop_postgres(self) -> None:
        self.postgres.stop_server()

    def start_postgres(self) -> None:
        self.postgres.start_server()

    def committed(self, tenant_id: str) -> list[str]:
        """The ids of the tenant's events in the change log, in commit order."""
        with psycopg.connect(self.postgres.url("mailwatch")) as conn:
            rows = conn.execute(
                "SELECT id::text FROM change_events WHERE tenant_id = %s ORDER BY sequence", (tenant_id,)
            ).fetchall()
        return [row[0] for row in rows]

    def expire_cursors(self, tenant_id: str) -> None:
        """What retention does to a tenant's log: everything up to its newest event is pruned."""
        with psycopg.connect(self.postgres.url("mailwatch"), autocommit=True) as conn:
            conn.execute(
                "UPDATE tenants SET pruned_through_sequence = "
                "(SELECT max(sequence) FROM change_events WHERE tenant_id = %(t)s) WHERE id = %(t)s",
                {"t": tenant_id},
            )

    def start_tls(self) -> dict:
        """A second server on the same database that requires mutual TLS; the PEM files to reach it."""
        if self.tls_serve is None:
            ca = CertificateAuthority()
            self.ca_file = ca.write(self.scratch, "ca")
            cert_file, key_file = ca.issue("mailwatch", server=True).write(self.scratch, "server")
            self.client_cert, self.client_key = ca.issue("ts-client", server=False).write(self.scratch, "client")
            self.stranger_cert, self.stranger_key = CertificateAuthority("another CA").issue(
                "stranger", server=False).write(self.scratch, "stranger")
            env = {
                **self.settings.environment(),
                "MAILWATCH_LISTEN": "127.0.0.1:0",
                "MAILWATCH_TLS_CERT_FILE": str(cert_file),
                "MAILWATCH_TLS_KEY_FILE": str(key_file),
                "MAILWATCH_TLS_CLIENT_CA_FILE": str(self.ca_file),
            }
            self.tls_serve = ServiceProcess(child_env(env)).start()
        return {
            "target": self.tls_serve.target,
            "caFile": str(self.ca_file),
            "certFile": str(self.client_cert),
            "keyFile": str(self.client_key),
            "strangerCertFile": str(self.stranger_cert),
            "strangerKeyFile": str(self.stranger_key),
        }

    def sim_call(self, method: str, args: list | None = None, kwargs: dict | None = None):
        """A SimulatorControl call (insert_message, add_latency, inject_fault, ...)."""
        if method.startswith("_"):
            raise ValueError(f"not a simulator control call: {method}")
        return getattr(self.control, method)(*(args or []), **(kwargs or {}))


COMMANDS = {
    "new_tenant": World.new_tenant,
    "set_tenant_limits": World.set_tenant_limits,
    "restart_server": World.restart_server,
    "stop_server": World.stop_server,
    "start_server": World.start_server,
    "restart_postgres": World.restart_postgres,
    "stop_postgres": World.stop_postgres,
    "start_postgres": World.start_postgres,
    "committed": World.committed,
    "expire_cursors": World.expire_cursors,
    "start_tls": World.start_tls,
    "sim": World.sim_call,
}


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> int:
    world = World()

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        reply({"id": 0, "ok": True, "result": world.start()})
        for line in sys.stdin:
            if not line.strip():
                continue
            request = json.loads(line)
            if request["cmd"] == "stop":
                break
            try:
                result = COMMANDS[request["cmd"]](world, **request.get("args", {}))
                reply({"id": request["id"], "ok": True, "result": result})
            except Exception as exc:  # the test that sent it fails with this text
                reply({"id": request["id"], "ok": False, "error": f"{exc!r}\n{traceback.format_exc()}"})
    except Exception as exc:
        reply({"id": 0, "ok": False, "error": f"{exc!r}\n{traceback.format_exc()}"})
        return 1
    finally:
        world.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
