"""A throwaway PostgreSQL cluster in a temporary directory.

Postgres refuses to run as root. When we are root, the cluster directory is
owned by the unprivileged `postgres` system user and every server binary runs
as that user through `runuser`; otherwise the binaries run as ourselves.
"""

from __future__ import annotations

import os
import pwd
import shlex
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
        self._process = subprocess.Popen(
            self._command(str(self.bindir / "postgres"), "-D", str(self.datadir), *self._server_options()),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.host, self.port, timeout, alive=lambda: self._process.poll() is None)
        self._wait_ready(timeout)
        return self

    def _server_options(self) -> list[str]:
        # Durability settings are off because the cluster is thrown away; the
        # socket lives in our own directory so no system path is touched.
        return [
            "-p", str(self.port), "-h", self.host, "-k", str(self._root),
            "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off", "-c", "max_connections=300",
        ]

    # --- outages, for fault tests: the real server stops and starts again ------

    def _pg_ctl(self, *args: str, timeout: float = 60.0) -> None:
        subprocess.run(
            self._command(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
        )

    def stop_server(self, mode: str = "fast") -> None:
        """`pg_ctl stop`: sessions are ended (admin shutdown), the port closes.
        The data directory stays; `start_server()` brings the same cluster back."""
        self._pg_ctl("stop", "-m", mode, "-w")
        self._reap()

    def start_server(self, timeout: float = 30.0) -> None:
        """`pg_ctl start` on the same port and data directory, after `stop_server()`."""
        options = " ".join(shlex.quote(option) for option in self._server_options())
        self._pg_ctl("start", "-w", "-t", str(int(timeout)), "-l", str(self._root / "server.log"), "-o", options)
        self._wait_ready(timeout)

    def restart(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """`pg_ctl restart`: every session is cut, the server comes back on the same port."""
        self._pg_ctl("restart", "-m", mode, "-w", "-t", str(int(timeout)), "-l", str(self._root / "server.log"))
        self._reap()
        self._wait_ready(timeout)

    def _reap(self) -> None:
        # The postmaster we started directly has exited: collect it. A pg_ctl
        # started one is not our child; stop() finds it by its pid file.
        if self._process is not None and self._process.poll() is not None:
            self._process = None

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
        else:
            # Started again by pg_ctl (start_server / restart): not our child.
            pid = _postmaster_pid(self.datadir)
            if pid is not None:
                _stop_by_pid(pid)
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> "TemporaryPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _stop_by_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGINT (fast shutdown) to a postmaster that is not our child; SIGKILL if it lingers."""
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _postmaster_pid(datadir: Path) -> int | None:
    try:
        return int((datadir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
