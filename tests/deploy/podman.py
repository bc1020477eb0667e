"""Building and running the mailwatch image with Debian's podman, offline from any registry.

No container registry is reachable here, so the base image is made from
Debian packages (mmdebstrap) and imported; the Dockerfile takes it as its
BASE_IMAGE build argument. Podman reads this directory's containers.conf.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = Path(__file__).with_name("containers.conf")
# Bump the suffix when the recipe changes, so machines rebuild it.
BASE_IMAGE = "localhost/mailwatch-test-base:bookworm-1"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# A fresh machine downloads every dependency into the build; later builds reuse layers.
BUILD_TIMEOUT = 1200
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], env=env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


REQUIRED_TOOLS = ("podman", "mmdebstrap", "runc")
# The tests that need the built image (they run last, the image built meanwhile).
IMAGE_TESTS = "test_image.py"


def tools_present() -> bool:
    return all(shutil.which(tool) for tool in REQUIRED_TOOLS)


def run_tag() -> str:
    """A tag of this run's own, so concurrent runs on one machine never swap images."""
    return f"localhost/mailwatch:test-{uuid.uuid4().hex[:8]}"


def end_build(build: "BackgroundBuild | SharedBuild") -> None:
    """At the end of the run: the build stopped if still going, and this run's tag gone (built
    or not); the cached build layers stay."""
    build.stop()
    podman("rmi", build.tag, check=False)


def require_tools() -> None:
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise AssertionError(
            f"the image test needs {', '.join(missing)}: apt-get install podman runc mmdebstrap (.ci/run does)"
        )


def ensure_base_image() -> str:
    """The Debian base image (python3 + venv), made once per machine."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    with tempfile.TemporaryDirectory(prefix="mailwatch-base-") as directory:
        tarball = Path(directory) / "base.tar"
        subprocess.run(
            ["mmdebstrap", "--variant=apt", f"--include={BASE_PACKAGES}", "bookworm", str(tarball), DEBIAN_MIRROR],
            check=True, capture_output=True, timeout=900,
        )
        podman("import", str(tarball), BASE_IMAGE, timeout=300)
    return BASE_IMAGE


def build_image(base: str, tag: str) -> str:
    """Builds the repository's Dockerfile on `base` as `tag` (layers are cached across builds)."""
    args = ["build", "--network=host", "--build-arg", f"BASE_IMAGE={base}", "-t", tag]
    if HOST_CA_BUNDLE.exists():
        # Networks that intercept TLS: let pip in the build trust what this machine trusts.
        args += ["-v", f"{HOST_CA_BUNDLE}:/etc/ssl/certs/build-ca.crt:ro",
                 "--build-arg", "PIP_CERT=/etc/ssl/certs/build-ca.crt"]
    if os.environ.get("PIP_INDEX_URL"):
        args += ["--build-arg", f"PIP_INDEX_URL={os.environ['PIP_INDEX_URL']}"]
    podman(*args, str(REPO), timeout=BUILD_TIMEOUT)
    return tag


class BackgroundBuild:
    """`build_image(ensure_base_image(), tag)` in a child process of its own session, started
    while the other tests run: on a fresh machine the base image and the build are minutes of
    downloads and unpacking that need not hold up the suite. `stop()` ends it by its pid (its
    process group: podman, mmdebstrap) when the run ends before the image tests wait for it."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self._log = tempfile.TemporaryFile()
        # Its stdin is a pipe only this process writes to: when this process ends without
        # stop() (pytest killed, e.g. by a CI timeout, whose group kill no longer reaches a
        # child of its own session) the child reads end-of-file and ends its own group.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.deploy.podman", tag],
            cwd=REPO, env=env(), stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def result(self) -> str:
        """The built image's tag, once the build has finished; AssertionError with its output if it failed."""
        code = self.process.wait()
        if code != 0:
            self._log.seek(0)
            output = self._log.read().decode(errors="replace")
            raise AssertionError(f"building the image failed ({code}):\n{output[-8000:]}")
        return self.tag

    def stop(self) -> None:
        if self.process.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(timeout=30)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.process.stdin.close()
        self._log.close()


class SharedBuild:
    """A BackgroundBuild started by a pytest-xdist run's controller, which runs no test itself:
    its outcome (the tag, or the failure's output) is written to `directory`, where the worker
    that runs the image tests finds it (`shared_result`)."""

    def __init__(self, tag: str, directory: Path) -> None:
        self.tag = tag
        self.directory = directory
        self.build = BackgroundBuild(tag)
        self._publisher = threading.Thread(target=self._publish, daemon=True)
        self._publisher.start()

    def _publish(self) -> None:
        try:
            text = "built\n" + self.build.result()
        except AssertionError as failure:
            text = "failed\n" + str(failure)
        except (OSError, ValueError):  # stop() closed the log: the run is ending
            return
        # Whole or not at all: a worker never reads a half-written outcome.
        partial = self.directory / "outcome.partial"
        partial.write_text(text)
        os.replace(partial, self.directory / "outcome")

    def stop(self) -> None:
        self.build.stop()
        self._publisher.join(timeout=30)


def shared_result(directory: Path, timeout: float) -> str:
    """In a pytest-xdist worker: the tag of the image the controller's SharedBuild built into
    `directory`, once it has finished; AssertionError with its output if it failed."""
    from tests.fixtures.waiting import eventually_sync

    outcome = directory / "outcome"
    eventually_sync(outcome.exists, timeout=timeout, interval=0.5, what="the image build (started by the controller)")
    status, _, text = outcome.read_text().partition("\n")
    if status != "built":
        raise AssertionError(text)
    return text


def _end_group_when_parent_ends() -> None:
    """In BackgroundBuild's child: once the parent's end of stdin closes (it stopped the build,
    or it died), this process group (this process, podman, mmdebstrap) is ended."""

    def watch() -> None:
        # The descriptor, not sys.stdin: a daemon thread blocked in a buffered read holds the
        # buffer's lock, and the interpreter's shutdown then aborts on it.
        while os.read(0, 512):
            pass
        os.killpg(0, signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":  # the child of BackgroundBuild: python -m tests.deploy.podman TAG
    _end_group_when_parent_ends()
    build_image(ensure_base_image(), sys.argv[1])
