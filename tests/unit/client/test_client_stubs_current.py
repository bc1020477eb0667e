"""The client twins' type stubs must be what scripts/gen_client_stubs.py writes from the table of calls."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

from mailwatch_client._calls import CALLS

ROOT = Path(__file__).resolve().parents[3]


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_client_stubs", ROOT / "scripts" / "gen_client_stubs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_client_stubs", module)
    spec.loader.exec_module(module)
    return module


def test_the_stubs_are_current_and_declare_every_call():
    generator = _load_generator()
    for awaitable, path in generator.STUBS.items():
        text = path.read_text()
        assert text == generator.render(awaitable), (
            f"{path.name} is out of date; run: .venv/bin/python scripts/gen_client_stubs.py"
        )
        (client,) = [node for node in ast.parse(text).body if isinstance(node, ast.ClassDef)]
        methods = {node.name: node for node in client.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for call in CALLS:
            assert isinstance(methods[call.name], ast.AsyncFunctionDef if awaitable else ast.FunctionDef)
            assert [arg.arg for arg in methods[call.name].args.kwonlyargs][-3:] == ["timeout", "metadata", "retry"]
