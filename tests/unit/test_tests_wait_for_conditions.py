"""Tests wait for conditions, never for a fixed time (tests/fixtures/waiting.py).

A bare sleep in a test is a guess at how long something takes, and a busy CI
machine makes the guess wrong. The sleeps a test may still make are not waits
for something: the pace of a simulated peer (a slow consumer, changes made in
Gmail), a sampling interval, a reconnect backoff. Each says so in a comment on
its line; this test finds any sleep that does not.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
WAITING = TESTS / "fixtures" / "waiting.py"


def _sleep_lines(tree: ast.AST) -> list[int]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name == "sleep":
                found.append(node.lineno)
    return found


def _commented_lines(source: str) -> set[int]:
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {token.start[0] for token in tokens if token.type == tokenize.COMMENT}


def test_every_sleep_in_the_tests_is_a_commented_pace_not_a_wait():
    bare = []
    for path in sorted(TESTS.rglob("*.py")):
        if path == WAITING:
            continue
        source = path.read_text()
        commented = _commented_lines(source)
        bare += [f"{path.relative_to(TESTS)}:{line}" for line in _sleep_lines(ast.parse(source)) if line not in commented]
    assert not bare, (
        "fixed sleeps in tests; wait for a condition with tests.fixtures.waiting.eventually, or for a period "
        f"that is itself under test with stays(); a pace or interval says so in a comment: {bare}"
    )
