"""`buf lint` over the API contract with the configuration the protos carry (protos/buf.yaml).

buf reads a descriptor set that protoc builds with the same import paths as the code
generator (scripts/gen_protos.py), so `google/rpc/status.proto` resolves from the installed
googleapis-common-protos and no copy of it lives here; the imported google/ files are not ours
to lint and are excluded. buf comes from npm at the version package-lock.json pins
(tests/fixtures/buf.py installs it with `npm ci`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.fixtures.buf import buf_executable
from tests.fixtures.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"


def _gen_protos():
    return load_script("gen_protos")


def buf_lint(proto_root: Path, scratch: Path) -> tuple[int, list[dict]]:
    image = scratch / "image.binpb"
    _gen_protos().run_protoc(proto_root, "--include_imports", "--include_source_info", f"-o{image}")
    result = subprocess.run(
        [str(buf_executable()), "lint", str(image), "--config", str(PROTOS / "buf.yaml"),
         "--exclude-path", "google", "--error-format", "json"],
        capture_output=True, text=True, timeout=120,
    )
    assert not result.stderr, result.stderr  # buf's own failures (bad config, unreadable input)
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()]


def test_protos_pass_buf_lint(tmp_path):
    returncode, findings = buf_lint(PROTOS, tmp_path)
    assert (returncode, findings) == (0, []), "\n".join(
        f"{f['path']}:{f['start_line']}: {f['type']}: {f['message']}" for f in findings
    )


def test_buf_lint_reports_a_style_violation_in_the_contract(tmp_path):
    """The check above lints our files with our rules: an enum without an _UNSPECIFIED zero
    value, added to a copy of the contract, is reported where it is."""
    copy = tmp_path / "protos"
    shutil.copytree(PROTOS, copy)
    resources = copy / "mailwatch" / "v1" / "resources.proto"
    resources.write_text(resources.read_text() + "\nenum Shade {\n  SHADE_DARK = 0;\n}\n")
    returncode, findings = buf_lint(copy, tmp_path)
    assert returncode != 0
    assert {(f["path"], f["type"]) for f in findings} == {("mailwatch/v1/resources.proto", "ENUM_ZERO_VALUE_SUFFIX")}
