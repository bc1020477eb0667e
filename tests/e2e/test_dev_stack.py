"""`mailwatch dev` as a newcomer runs it: ready banner, events flowing, Ctrl-C leaves nothing behind.

Besides the full stack (system PostgreSQL 15, Pub/Sub emulator), the stack
runs on Python alone: the system's PostgreSQL binaries and the emulator are
hidden (MAILWATCH_PG_BINDIR and MAILWATCH_PUBSUB_EMULATOR set empty, and a
PATH with neither PostgreSQL nor Java), so it falls back to the embedded
PostgreSQL and to push delivery from the simulator.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from mailwatch_devstack.ports import free_port
from mailwatch_devstack.gmail_sim import SimulatorControl
from mailwatch_client import EventType, MailwatchClient, RetryConfig
from tests.fixtures.processes import DevStackProcess, descendants, full_pipe, stop_once_handled
from tests.fixtures.waiting import eventually_sync

pytestmark = pytest.mark.e2e

MESSAGE_ADDED = EventType.Value("EVENT_TYPE_MESSAGE_ADDED")


def full_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILWATCH_") and k != "PUBSUB_EMULATOR_HOST"}


def python_only_env() -> dict[str, str]:
    env = {k: v for k, v in full_env().items() if k != "JAVA_HOME"}
    env.update(MAILWATCH_PG_BINDIR="", MAILWATCH_PUBSUB_EMULATOR="", PATH=str(Path(sys.executable).parent))
    return env


def dev_args(grpc_port: int, sim_port: int, *extra: str) -> list[str]:
    return ["--listen", f"127.0.0.1:{grpc_port}", "--sim-port", str(sim_port), *extra]


@pytest.fixture
def data_dir():
    """Reachable by the unprivileged user Postgres runs as when we are root (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="mailwatch-dev-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(300)
def test_dev_stack_streams_events_and_stops_every_child_on_sigint():
    dev = DevStackProcess(dev_args(free_port(), free_port(), "--trickle", "0.2"), full_env())
    try:
        dev.start()
        assert "PostgreSQL 15" in dev.text and "notifications:   Pub/Sub emulator" in dev.text
        with MailwatchClient(dev.target, dev.api_key, stream_retry=RetryConfig(max_attempts=3)) as client:
            mailboxes = list(client.iter_mailboxes())
            assert {m.email_address for m in mailboxes} == {"alice@demo.test", "bob@demo.test", "carol@demo.test"}
            seen = []
            with client.stream_changes(start="earliest", event_types=["MESSAGE_ADDED"], heartbeat_interval=1) as stream:
                for event in stream:
                    seen.append(event)
                    if len(seen) >= 3:
                        break
        assert all(e.type == MESSAGE_ADDED for e in seen)
        assert descendants_exist(dev), "the dev stack should run Postgres and the Pub/Sub emulator as child processes"
        dev.stop()
    finally:
        dev.kill()


@pytest.mark.timeout(300)  # initdb and start of a whole stack on a busy machine
def test_dev_stack_ctrl_c_as_its_banner_is_printed_stops_it_cleanly():
    """The banner is printed only once Ctrl-C stops the stack cleanly: a stack interrupted at
    once by whoever waited for it exits 0. Its stdout is a full pipe, so it blocks in that print."""
    read_end, write_end = full_pipe()
    dev = subprocess.Popen([sys.executable, "-m", "mailwatch.cli", "dev", *dev_args(free_port(), free_port())],
                           env=python_only_env(), stdout=write_end, stderr=subprocess.STDOUT)
    os.close(write_end)
    try:
        output = stop_once_handled(dev, signal.SIGINT, read_end, timeout=240,
                                   what="mailwatch dev handling its stop signals (its banner's print blocked meanwhile)")
        assert dev.wait(timeout=60) == 0, output[-4000:]
        assert "Ctrl-C stops everything" in output and "Traceback" not in output, output[-4000:]
    finally:
        if dev.poll() is None:  # it failed: it and what it started, by their pids
            tree = descendants(dev.pid)
            dev.kill()
            dev.wait()
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def descendants_exist(dev: DevStackProcess) -> bool:
    from tests.fixtures.processes import descendants

    return bool(descendants(dev.process.pid))


class TailProcess:
    """`mailwatch tail` as a child process; its stdout lines collected by a thread."""

    def __init__(self, target: str, api_key: str, env: dict[str, str], *args: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mailwatch.cli", "tail", "--target", target, "--api-key", api_key, *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate, timeout: float = 90.0) -> list[str]:
        def seen() -> bool:
            if predicate(self.lines):
                return True
            assert self.process.poll() is None, f"tail exited; its output: {self.lines[-20:]}"
            return False

        try:
            eventually_sync(seen, timeout=timeout, what="tail's output")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; tail output so far: {self.lines[-20:]}") from None
        return list(self.lines)

    def interrupt(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        stderr = self.process.stderr.read()
        self.process.stdout.close()
        self.process.stderr.close()
        return code, stderr

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.mark.timeout(300)  # initdb, start and stop of a whole stack on a busy machine
def test_dev_stack_on_python_alone_streams_through_tail_and_stops_cleanly():
    env = python_only_env()
    dev = DevStackProcess(dev_args(free_port(), free_port(), "--trickle", "0.3"), env)
    tail = None
    try:
        dev.start()
        assert "PostgreSQL 18" in dev.text, dev.text
        assert "notifications:   push from the Gmail simulator" in dev.text, dev.text
        tail = TailProcess(dev.target, dev.api_key, env, "--from", "earliest")
        lines = tail.wait_for(lambda lines: sum("MESSAGE_ADDED" in line for line in lines) >= 3)
        code, stderr = tail.interrupt()
        assert code == 0 and "last cursor:" in stderr, stderr
        assert {line.split()[2] for line in lines if "MESSAGE_ADDED" in line} <= {
            "alice@demo.test", "bob@demo.test", "carol@demo.test"}
        sim = SimulatorControl(re.search(r"Gmail simulator: (\S+)", dev.text).group(1))
        assert sim.notification_counts().get("pushed", 0) >= 3  # delivered by push, no emulator anywhere
        dev.stop()
    finally:
        if tail is not None:
            tail.kill()
        dev.kill()


@pytest.mark.timeout(480)  # two whole stacks, one after the other, on a busy machine
def test_dev_stack_with_a_data_dir_resumes_a_stream_after_a_restart(data_dir):
    env = python_only_env()
    grpc_port, sim_port = free_port(), free_port()
    args = dev_args(grpc_port, sim_port, "--data-dir", str(data_dir / "state"))

    def insert(sim: SimulatorControl, count: int) -> list[str]:
        ids = []
        for _ in range(count):
            sim.advance_clock(2)  # past Gmail's one notification per second per user: each one is pushed
            ids.append(sim.insert_message("alice@demo.test", label_ids=["INBOX"])["id"])
        return ids

    def read(dev: DevStackProcess, until: set[str], **start) -> list:
        events = []
        with MailwatchClient(dev.target, dev.api_key, stream_retry=RetryConfig(max_attempts=3)) as client:
            with client.stream_changes(event_types=["MESSAGE_ADDED"], heartbeat_interval=1, **start) as stream:
                for event in stream:
                    events.append(event)
                    if until <= {e.message_id for e in events}:
                        break
        return events

    first = DevStackProcess(args, env)
    try:
        first.start()
        sim = SimulatorControl(f"http://127.0.0.1:{sim_port}")
        before = insert(sim, 3)
        seen = read(first, set(before), start="earliest")
        assert [e.message_id for e in seen] == before
        cursor = seen[0].cursor  # a consumer processed the first message, then the stack stopped
        first.stop()
    finally:
        first.kill()

    second = DevStackProcess(args, env)
    try:
        second.start()
        assert second.api_key == first.api_key  # the same tenant and key come back
        after = insert(sim, 2)
        resumed = read(second, set(after), start=cursor)
        second.stop()
    finally:
        second.kill()

    # Exactly the events after the cursor: the two stored before the restart (the
    # same events, not re-derived) and the two made after it; no gap, no duplicate.
    assert [e.message_id for e in resumed] == before[1:] + after
    assert [e.id for e in resumed[:2]] == [e.id for e in seen[1:]]
    assert len({e.cursor for e in resumed}) == len(resumed)
