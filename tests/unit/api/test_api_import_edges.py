"""The gRPC edge's modules import one way (issue 13: a clean gRPC edge).

Request context lives below the API (`mailwatch.request_context`), so
auth and errors need not import each other and logging needs no API module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mailwatch

PACKAGE = Path(mailwatch.__file__).parent


def _imports(module: str) -> set[str]:
    path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("mailwatch.api.interceptors.auth", "mailwatch.api.errors"),
        ("mailwatch.api.errors", "mailwatch.api.interceptors"),
        ("mailwatch.logs", "mailwatch.api"),
        ("mailwatch.request_context", "mailwatch.api"),
        ("mailwatch.store.migrate", "mailwatch.store.db"),
    ],
)
def test_no_forbidden_import(module, forbidden):
    offending = {name for name in _imports(module) if name == forbidden or name.startswith(forbidden + ".")}
    assert not offending, f"{module} imports {sorted(offending)}"


def test_servicers_carry_no_per_method_error_decorators():
    """Error mapping is the ErrorInterceptor's alone: nothing to forget on a new RPC."""
    for module in ("mailwatch.api.mailboxes", "mailwatch.api.admin"):
        path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert not node.decorator_list, f"{module}.{node.name} is decorated"
