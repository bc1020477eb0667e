"""The committed generated code must be what scripts/gen_protos.py produces now."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "service" / "mailwatch" / "v1"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_protos", module)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_current(tmp_path):
    gen_protos = _load_generator()
    fresh = {path.name: path.read_bytes() for path in gen_protos.generate(tmp_path)}
    committed = {
        path.name: path.read_bytes()
        for path in COMMITTED.iterdir()
        if path.name.endswith(gen_protos.GENERATED_SUFFIXES)
    }

    assert fresh, "no proto files found"
    stale = sorted(name for name in fresh.keys() & committed.keys() if fresh[name] != committed[name])
    missing = sorted(fresh.keys() - committed.keys())
    extra = sorted(committed.keys() - fresh.keys())
    assert not (stale or missing or extra), (
        f"generated code is out of date (stale={stale}, missing={missing}, extra={extra}); "
        "run: python scripts/gen_protos.py"
    )
