"""Layers point one way: `api` (protobuf, cursors) sits above everything it serves.

Walks every module of service/mailwatch (imports inside functions included)
and fails on an import from a lower layer into `mailwatch.api`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import mailwatch

PACKAGE_ROOT = Path(mailwatch.__file__).parent

# Packages below the API layer: none of them may import mailwatch.api.
LOWER_LAYERS = ("streams", "store", "gmail", "ingest", "workers", "sync", "domain", "lifecycle")


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_statements(path: Path, root: Path) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(module, names) per import in `path`, anywhere in it: `import m` gives (m, ()),
    `from m import a, b` gives (m, (a, b)); relative imports resolved to absolute names."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, tuple(alias.name for alias in node.names)


def _imports(path: Path, root: Path) -> set[str]:
    """Every module `path` imports (and, for `from m import a`, also `m.a`)."""
    found: set[str] = set()
    for target, names in import_statements(path, root):
        found.add(target)
        # `from mailwatch import api` names the package through its alias.
        found.update(f"{target}.{name}" for name in names)
    return found


def forbidden_edges(root: Path = PACKAGE_ROOT) -> list[tuple[str, str]]:
    edges = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        layer = module.split(".")[1] if "." in module else ""
        if layer not in LOWER_LAYERS:
            continue
        for target in sorted(_imports(path, root)):
            if target == "mailwatch.api" or target.startswith("mailwatch.api."):
                edges.append((module, target))
    return edges


def test_no_lower_layer_imports_the_api():
    assert forbidden_edges() == []


def test_the_walk_finds_a_forbidden_edge(tmp_path):
    # The checker itself: an absolute, a relative and a late import into api are all caught.
    root = tmp_path / "mailwatch"
    for package in ("api", "streams", "store"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "api" / "tokens.py").write_text("")
    (root / "streams" / "changes.py").write_text("from mailwatch.api.tokens import encode_cursor\n")
    (root / "streams" / "late.py").write_text("def f():\n    from ..api import tokens\n")
    (root / "store" / "ok.py").write_text("from mailwatch.domain import models\n")
    assert forbidden_edges(root) == [
        ("mailwatch.streams.changes", "mailwatch.api.tokens"),
        ("mailwatch.streams.changes", "mailwatch.api.tokens.encode_cursor"),
        ("mailwatch.streams.late", "mailwatch.api"),
        ("mailwatch.streams.late", "mailwatch.api.tokens"),
    ]
