"""`python -m mailwatch_devstack.gmail_sim.cli`: readiness line, serves, exits cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from mailwatch_devstack.gmail_sim import SimulatorControl

pytestmark = pytest.mark.integration


def test_cli_serves_until_sigterm():
    env = dict(os.environ)
    env.pop("PUBSUB_EMULATOR_HOST", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "mailwatch_devstack.gmail_sim.cli", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = process.stdout.readline()
        match = re.fullmatch(r"gmail-sim listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        control = SimulatorControl(match.group(1))
        assert control.create_mailbox("cli@example.com")["emailAddress"] == "cli@example.com"
        assert control.config()["pubsubEmulatorHost"] is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
