"""The embedded server's own lifecycle: kept data directories, version checks, root."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from mailwatch_devstack.postgres import TemporaryPostgres, embedded_bindir

pytestmark = pytest.mark.integration


@pytest.fixture
def reachable_dir():
    """A directory the unprivileged server user can reach when we are root (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="mailwatch-test-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_kept_data_directory_survives_a_restart(reachable_dir):
    datadir = reachable_dir / "pg"
    first = TemporaryPostgres(embedded=True, datadir=datadir).start()
    try:
        with psycopg.connect(first.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE kept")
        with psycopg.connect(first.url("kept"), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (v int); INSERT INTO t VALUES (42)")
    finally:
        first.stop()
    assert (datadir / "PG_VERSION").exists() and not (datadir / "postmaster.pid").exists()

    second = TemporaryPostgres(embedded=True, datadir=datadir).start()
    try:
        with psycopg.connect(second.url("kept")) as conn:
            assert conn.execute("SELECT v FROM t").fetchone() == (42,)
    finally:
        second.stop()
    assert (datadir / "PG_VERSION").exists()


def test_a_data_directory_of_another_major_version_is_refused_clearly(reachable_dir, postgres_server):
    datadir = reachable_dir / "pg"
    TemporaryPostgres(embedded=True, datadir=datadir).start().stop()
    with pytest.raises(RuntimeError, match="holds a PostgreSQL 18 cluster but the binaries .* are PostgreSQL 15"):
        TemporaryPostgres(datadir=datadir, bindir="/usr/lib/postgresql/15/bin").start()
    assert not (datadir / "postmaster.pid").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_as_root_binaries_the_server_user_cannot_reach_are_run_from_a_readable_copy(tmp_path):
    private = tmp_path / "private"  # like a virtualenv under /root (0700)
    private.mkdir(mode=0o700)
    install = embedded_bindir().parent
    package = install.parent
    # The wheel's layout: <site>/<package>/<install>/bin and its bundled libraries in <site>/<package>.libs
    shutil.copytree(install, private / package.name / install.name, symlinks=True)
    shutil.copytree(package.parent / f"{package.name}.libs", private / f"{package.name}.libs", symlinks=True)
    server = TemporaryPostgres(bindir=private / package.name / install.name / "bin")
    copy = server.bindir.parents[2]
    try:
        assert not server.bindir.is_relative_to(private) and copy.name.startswith("mailwatch-pg-")
        server.start()
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    finally:
        server.stop()
        shutil.rmtree(copy, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_as_root_without_a_postgres_user_the_server_runs_as_nobody(monkeypatch):
    """A fresh machine has no `postgres` user: the embedded server runs as `nobody` instead."""
    import pwd

    real = pwd.getpwnam

    def without_postgres(name):
        if name == "postgres":
            raise KeyError(name)
        return real(name)

    monkeypatch.setattr(pwd, "getpwnam", without_postgres)
    server = TemporaryPostgres(embedded=True)
    try:
        server.start()
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        owner = (server.datadir / "PG_VERSION").stat().st_uid
        assert owner == real("nobody").pw_uid
        uid_line = next(line for line in Path(f"/proc/{server._process.pid}/status").read_text().splitlines()
                        if line.startswith("Uid:"))
        assert uid_line.split()[1] == str(owner)  # the postmaster itself (setpriv execs in place)
    finally:
        server.stop()
