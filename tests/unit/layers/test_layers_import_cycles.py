"""No import cycles in service/mailwatch: modules form a graph without loops.

Walks every module (imports inside functions included, since a late import
only hides a cycle). `from pkg import name` counts as importing `pkg.name`
when that is a module, else `pkg`; a package's own `__init__` is not counted
as a cycle with the submodules it re-exports when they import siblings.
"""

from __future__ import annotations

from pathlib import Path

from tests.unit.layers.test_layers import PACKAGE_ROOT, _module_name, import_statements


def _edges(path: Path, root: Path, modules: set[str]) -> set[str]:
    found: set[str] = set()
    for target, names in import_statements(path, root):
        if not names:
            found.add(target)
        for name in names:
            submodule = f"{target}.{name}"
            found.add(submodule if submodule in modules else target)
    return {target for target in found if target in modules and target != _module_name(path, root)}


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    paths = {_module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    modules = set(paths)
    return {module: _edges(path, root, modules) for module, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_service_has_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_walk_finds_a_cycle(tmp_path):
    # The checker itself: a late (function-level) import closing a loop is a cycle;
    # a package importing its own submodules, and them importing siblings, is not.
    root = tmp_path / "mailwatch"
    for package in ("store", "ingest"):
        (root / package).mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "store" / "__init__.py").write_text("from mailwatch.store.db import engine\n")
    (root / "store" / "db.py").write_text("def engine():\n    from mailwatch.store import migrate\n")
    (root / "store" / "migrate.py").write_text("from mailwatch.store.db import engine\n")
    (root / "ingest" / "__init__.py").write_text("from mailwatch.ingest.pull import Puller\n")
    (root / "ingest" / "metrics.py").write_text("")
    (root / "ingest" / "pull.py").write_text("from mailwatch.ingest import metrics\n")
    assert cycles(import_graph(root)) == [["mailwatch.store.db", "mailwatch.store.migrate"]]
