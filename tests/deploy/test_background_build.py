"""The image's background build (tests/deploy/podman.py BackgroundBuild) ends with the pytest
run that started it, even when that run is killed and never stops it: the build runs in a session
of its own, out of reach of a group kill of the run (a CI timeout), and would otherwise go on
building, holding podman's storage, for up to its 20 minutes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy import podman as pm
from tests.fixtures.waiting import eventually_sync

pytestmark = pytest.mark.e2e

# A run that starts the build, says the build's pid, and waits to be killed.
RUN = """
import sys, threading
from tests.deploy.podman import BackgroundBuild
build = BackgroundBuild("localhost/mailwatch:test-killed-run")
print(build.process.pid, flush=True)
threading.Event().wait()
"""


def _group(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, group = stat.rpartition(")")[2].split()[:3]
        if int(group) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def test_the_build_ends_when_the_run_that_started_it_is_killed(tmp_path):
    # podman that never finishes: the build's first call (`podman image exists`) hangs in it.
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "podman").write_text("#!/bin/sh\nexec sleep 600\n")
    (tools / "podman").chmod(0o755)
    run = subprocess.Popen(
        [sys.executable, "-c", RUN], cwd=pm.REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"},
    )
    build = None
    try:
        build = int(run.stdout.readline())
        eventually_sync(lambda: len(_group(build)) >= 2, what="the build's podman running in its group")
        run.kill()  # no pytest_unconfigure, no stop()
        run.wait()
        eventually_sync(lambda: not _group(build), what="the build's process group gone")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        run.stdout.close()
        if build is not None and _group(build):
            os.killpg(build, signal.SIGKILL)


def _fake_podman(tmp_path: Path, script: str) -> str:
    """A PATH whose podman is `script` (a shell script body)."""
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "podman").write_text(f"#!/bin/sh\n{script}\n")
    (tools / "podman").chmod(0o755)
    return f"{tools}{os.pathsep}{os.environ['PATH']}"


def test_a_build_the_xdist_controller_started_reaches_the_worker_that_waits_for_it(tmp_path, monkeypatch):
    # podman that finds the base image and builds at once.
    monkeypatch.setenv("PATH", _fake_podman(tmp_path, "exit 0"))
    outcome = tmp_path / "outcome"
    outcome.mkdir()
    build = pm.SharedBuild("localhost/mailwatch:test-shared", outcome)
    try:
        assert pm.shared_result(outcome, timeout=60) == "localhost/mailwatch:test-shared"
    finally:
        build.stop()


def test_a_failed_build_the_xdist_controller_started_fails_the_worker_with_its_output(tmp_path, monkeypatch):
    # podman that finds the base image, then fails the build.
    script = "if [ \"$1\" = build ]; then echo 'no space left on device' >&2; exit 125; fi"
    monkeypatch.setenv("PATH", _fake_podman(tmp_path, script))
    outcome = tmp_path / "outcome"
    outcome.mkdir()
    build = pm.SharedBuild("localhost/mailwatch:test-shared", outcome)
    try:
        with pytest.raises(AssertionError, match="no space left on device"):
            pm.shared_result(outcome, timeout=60)
    finally:
        build.stop()
