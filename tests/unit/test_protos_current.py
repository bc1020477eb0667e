"""The committed generated code must be what scripts/gen_protos.py produces now.

It regenerates with the installed grpcio-tools, which the README's command
installs from the lock (requirements/dev.txt), and compares: byte for byte
when that is the locked release. On a machine with another release (say a
newer patch), the generator's version stamps (`GRPC_GENERATED_VERSION`, the
protobuf gencode version) are masked on both sides first, so a stamp alone
does not fail the test while any real difference does; the committed
`GRPC_GENERATED_VERSION` must still equal the locked grpcio-tools
(tests/fixtures/generated_code.py).
"""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.generated_code import explain, stale_files
from tests.fixtures.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "service" / "mailwatch" / "v1"


def _load_generator():
    return load_script("gen_protos")


def test_generated_code_is_current(tmp_path):
    gen_protos = _load_generator()
    fresh = {path.name: path.read_bytes() for path in gen_protos.generate(tmp_path)}
    committed = {
        path.name: path.read_bytes()
        for path in COMMITTED.iterdir()
        if path.name.endswith(gen_protos.GENERATED_SUFFIXES)
    }

    assert fresh, "no proto files found"
    problems = stale_files(fresh, committed)
    assert not any(problems.values()), explain(problems)
