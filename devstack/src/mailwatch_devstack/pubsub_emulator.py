"""Google's Cloud Pub/Sub emulator as a child process on a free loopback port.

Found at `$MAILWATCH_PUBSUB_EMULATOR` when set (set but empty means "none on
this machine": how tests hide it), else at the gcloud component's fixed path,
else as `cloud-pubsub-emulator` on `$PATH`. It is a Java program: without a
`java` on `$PATH` (or `$JAVA_HOME`) it counts as absent.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from mailwatch_devstack.ports import free_port, wait_for_port

DEFAULT_EMULATOR = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
EMULATOR_ENV = "MAILWATCH_PUBSUB_EMULATOR"


class EmulatorNotFound(RuntimeError):
    pass


def find_emulator(environ=None) -> str | None:
    """The emulator's launcher, or None when this machine cannot run it."""
    environ = os.environ if environ is None else environ
    configured = environ.get(EMULATOR_ENV)
    if configured is not None:
        if not configured:
            return None
        if not Path(configured).exists():
            raise EmulatorNotFound(f"{EMULATOR_ENV}={configured} does not exist")
        found = configured
    elif Path(DEFAULT_EMULATOR).exists():
        found = DEFAULT_EMULATOR
    else:
        found = shutil.which("cloud-pubsub-emulator", path=environ.get("PATH"))
    if found is None or not _java_available(environ):
        return None
    return found


def _java_available(environ) -> bool:
    java_home = environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return True
    return shutil.which("java", path=environ.get("PATH")) is not None


class PubSubEmulator:
    """Start with `start()`; `host` is what PUBSUB_EMULATOR_HOST must hold."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._datadir = Path(tempfile.mkdtemp(prefix="mailwatch-pubsub-"))
        self._log = None
        self._process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "PubSubEmulator":
        launcher = find_emulator()
        if launcher is None:
            raise EmulatorNotFound(f"Pub/Sub emulator (and Java) not found; set {EMULATOR_ENV}")
        self._log = open(self._datadir / "emulator.log", "wb")
        # Its own session, so the shell wrapper and the JVM it spawns form one
        # process group that stop() can signal through our child's pid.
        self._process = subprocess.Popen(
            [launcher, "--host=127.0.0.1", f"--port={self.port}", f"--data-dir={self._datadir}"],
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
