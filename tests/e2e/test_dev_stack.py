"""`mailwatch dev` as a newcomer runs it: ready banner, events flowing, Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mailwatch.devstack.ports import free_port
from mailwatch_client import EventType, MailwatchClient, RetryConfig

pytestmark = pytest.mark.e2e

API_KEY = re.compile(r"API key:\s+(\S+)")
GRPC = re.compile(r"gRPC:\s+(\S+)")


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children of all its threads, recursively)."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                pids = {int(child) for child in children.read_text().split()}
            except (FileNotFoundError, ProcessLookupError):
                continue
            pending.extend(pids - found)
            found |= pids
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait() is missing


def test_dev_stack_streams_events_and_stops_every_child_on_sigint():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILWATCH_") and k != "PUBSUB_EMULATOR_HOST"}
    grpc_port, sim_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mailwatch.cli", "dev", "--listen", f"127.0.0.1:{grpc_port}",
         "--sim-port", str(sim_port), "--trickle", "0.2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        for line in process.stdout:
            output.append(line.rstrip("\n"))
            if any(API_KEY.search(seen) for seen in output) and "mailwatch dev stack ready" in "\n".join(output):
                ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    tree: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        while not ready.wait(0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("mailwatch dev did not become ready:\n" + "\n".join(output[-40:]))
        text = "\n".join(output)
        api_key = API_KEY.search(text).group(1)
        target = GRPC.search(text).group(1)
        assert target == f"127.0.0.1:{grpc_port}"

        # The trickle generates activity; the stream sees it.
        with MailwatchClient(target, api_key, stream_retry=RetryConfig(max_attempts=3)) as client:
            mailboxes = list(client.iter_mailboxes())
            assert {m.email_address for m in mailboxes} == {"alice@demo.test", "bob@demo.test", "carol@demo.test"}
            seen = []
            with client.stream_changes(start="earliest", event_types=["MESSAGE_ADDED"], heartbeat_interval=1) as stream:
                for event in stream:
                    seen.append(event)
                    if len(seen) >= 3:
                        break
        assert all(e.type == EventType.Value("EVENT_TYPE_MESSAGE_ADDED") for e in seen)
        assert {e.email_address for e in seen} <= {m.email_address for m in mailboxes}

        tree = descendants(process.pid)
        assert tree, "the dev stack should run Postgres and the Pub/Sub emulator as child processes"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, "\n".join(output[-40:])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        reader.join(timeout=10)
        process.stdout.close()

    deadline = time.monotonic() + 10
    while (left := {pid for pid in tree if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind: {left}\n" + "\n".join(output[-40:])
    assert "Traceback" not in "\n".join(output)
