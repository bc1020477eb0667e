"""The client twins' type stubs must be what scripts/gen_client_stubs.py writes from the table of calls."""

from __future__ import annotations

import ast

from mailwatch_client._calls import CALLS
from tests.fixtures.scripts import load_script



def _load_generator():
    return load_script("gen_client_stubs")


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
