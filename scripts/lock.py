"""Refresh the dependency lock: requirements/dev.txt and requirements/runtime.txt.

Usage (from the repository root; needs Python 3.11 and the package index):

    python3 scripts/lock.py                       # after editing a pyproject.toml: add/drop what changed, keep other pins
    python3 scripts/lock.py --upgrade             # move every pin to the newest release the pyproject files allow
    python3 scripts/lock.py --upgrade-package grpcio-tools   # move one (repeatable)

then reinstall (README's test command) and, if grpcio-tools moved,
`python scripts/gen_protos.py` (tests/unit/test_protos_current.py says so).

The lock is made by uv's `uv pip compile --generate-hashes` (the release
pinned with its hashes in requirements/lock-tool.txt, installed into a
throwaway virtualenv with `--require-hashes`): its output is an ordinary
requirements file with a sha256 hash for every distribution of each pinned
release, which plain pip installs with `--require-hashes`; so installing from
the lock needs nothing but Python and pip. Both files are resolved for
CPython 3.11 on every platform (`--universal`: markers, not one machine's
view). Our own three distributions (mailwatch, mailwatch-client,
mailwatch-devstack) are inputs, not pins: they are installed from the
checkout with `pip install --no-deps -e ...`.

- requirements/dev.txt: the service with its test tools, the client with its
  test tools, and the lab (devstack): what the README's commands and CI install.
- requirements/runtime.txt: the service and the client only, what the image
  installs; resolved under dev.txt as a constraint, so the image runs exactly
  the versions the tests ran.

tests/unit/test_lock.py fails when a pyproject.toml and the lock disagree.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
LOCK_TOOL = REQUIREMENTS / "lock-tool.txt"  # uv, pinned by hash like everything else
OURS = ("mailwatch", "mailwatch-client", "mailwatch-devstack")
COMMAND = "python3 scripts/lock.py"


def compile_lock(uv: Path, source: str, output: str, extra: list[str]) -> None:
    args = [
        str(uv), "pip", "compile", f"requirements/{source}",
        "--output-file", f"requirements/{output}",
        "--universal", "--python-version", "3.11",
        "--generate-hashes",
        "--custom-compile-command", COMMAND,
        *(arg for name in OURS for arg in ("--no-emit-package", name)),
        *extra,
    ]
    subprocess.run(args, cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upgrade", action="store_true", help="newest allowed release of everything")
    parser.add_argument("--upgrade-package", action="append", default=[], metavar="NAME",
                        help="newest allowed release of NAME (repeatable)")
    args = parser.parse_args(argv)
    upgrade = ["--upgrade"] if args.upgrade else [a for name in args.upgrade_package for a in ("--upgrade-package", name)]

    with tempfile.TemporaryDirectory(prefix="mailwatch-lock-") as scratch:
        tools = Path(scratch) / "venv"
        venv.create(tools, with_pip=True)
        subprocess.run([str(tools / "bin" / "python"), "-m", "pip", "install", "-q",
                        "--require-hashes", "-r", str(LOCK_TOOL)], check=True)
        uv = tools / "bin" / "uv"
        compile_lock(uv, "dev.in", "dev.txt", upgrade)
        # The runtime lock follows the dev lock (never its own newer pick), so it
        # needs no --upgrade of its own.
        compile_lock(uv, "runtime.in", "runtime.txt", ["--constraint", "requirements/dev.txt"])
    print("lock refreshed: requirements/dev.txt, requirements/runtime.txt", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
