"""A throwaway PostgreSQL cluster in a temporary directory.

Postgres refuses to run as root. When we are root, the cluster directory is
owned by the unprivileged `postgres` system user and every server binary runs
as that user through `runuser`; otherwise the binaries run as ourselves.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from mailwatch.devstack.ports import free_port, wait_for_port

DEFAULT_BINDIR = "/usr/lib/postgresql/15/bin"


def _find_bindir() -> Path:
    candidates = [os.environ.get("MAILWATCH_PG_BINDIR"), DEFAULT_BINDIR]
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL binaries not found; set MAILWATCH_PG_BINDIR")


class TemporaryPostgres:
    """initdb + postgres on a free loopback port; `stop()` removes everything."""

    def __init__(self, *, port: int | None = None, user: str = "postgres") -> None:
        self.bindir = _find_bindir()
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.user = user  # database superuser name inside the cluster
        self._os_user = "postgres" if os.geteuid() == 0 else None
        self._root = Path(tempfile.mkdtemp(prefix="mailwatch-pg-"))
        self.datadir = self._root / "data"
        self._process: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        """libpq connection URL for the `postgres` database."""
        return self.url("postgres")

    def url(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def _command(self, *args: str) -> list[str]:
        if self._os_user:
            return ["runuser", "-u", self._os_user, "--", *args]
        return list(args)

    def start(self, timeout: float = 30.0) -> "TemporaryPostgres":
        if self._os_user:
            entry = pwd.getpwnam(self._os_user)
            os.chown(self._root, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            self._command(
                str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", self.user,
                "--auth=trust", "--encoding=UTF8", "--no-sync", "-N",
            ),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        # Durability settings are off because the cluster is thrown away; the
        # socket lives in our own directory so no system path is touched.
        self._process = subprocess.Popen(
            self._command(
                str(self.bindir / "postgres"), "-D", str(self.datadir),
                "-p", str(self.port), "-h", self.host, "-k", str(self._root),
                "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=300",
            ),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.host, self.port, timeout, alive=lambda: self._process.poll() is None)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", self.host, "-p", str(self.port), "-U", self.user],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("postgres did not become ready")

    def stop(self) -> None:
        """Fast shutdown by the postmaster's process id, then remove the cluster."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # runuser may or may not exec; the postmaster pid is in its own file.
            pid = _postmaster_pid(self.datadir) or process.pid
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> "TemporaryPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _postmaster_pid(datadir: Path) -> int | None:
    try:
        return int((datadir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
