"""Google's Cloud Pub/Sub emulator as a child process on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from mailwatch.devstack.ports import free_port, wait_for_port

DEFAULT_EMULATOR = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"


def _find_emulator() -> str:
    for candidate in (os.environ.get("MAILWATCH_PUBSUB_EMULATOR"), DEFAULT_EMULATOR):
        if candidate and Path(candidate).exists():
            return candidate
    found = shutil.which("cloud-pubsub-emulator")
    if found:
        return found
    raise RuntimeError("Pub/Sub emulator not found; set MAILWATCH_PUBSUB_EMULATOR")


class PubSubEmulator:
    """Start with `start()`; `host` is what PUBSUB_EMULATOR_HOST must hold."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._datadir = Path(tempfile.mkdtemp(prefix="mailwatch-pubsub-"))
        self._log = None
        self._process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "PubSubEmulator":
        self._log = open(self._datadir / "emulator.log", "wb")
        # Its own session, so the shell wrapper and the JVM it spawns form one
        # process group that stop() can signal through our child's pid.
        self._process = subprocess.Popen(
            [_find_emulator(), "--host=127.0.0.1", f"--port={self.port}", f"--data-dir={self._datadir}"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port, timeout, alive=lambda: self._process.poll() is None)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self._datadir, ignore_errors=True)

    def __enter__(self) -> "PubSubEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
