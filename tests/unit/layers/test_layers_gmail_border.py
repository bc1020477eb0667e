"""Gmail's JSON is read in `gmail/` only: nothing else indexes a Gmail response dict.

`gmail/` turns every answer into typed values (history records, pages,
messages, profiles, watch results, domain errors); the rest of the service
reads their attributes. Two rules, over every module outside `gmail/` and the
tools shipped beside the product (the simulator and the dev stack speak
Gmail's wire format on purpose):

1. A value that comes from `gmail/` is never indexed by a string
   (`value["id"]`, `value.get("historyId")`). A value comes from `gmail/` when
   it is returned by a call on a Gmail client (`….gmail.method(…)`,
   `gmail.method(…)`), by a function imported from `mailwatch.gmail`, by a
   function or method of the same module whose return annotation names a type
   from `mailwatch.gmail`, or is a parameter annotated with such a type or
   handed such a value by a caller in the same module; and whatever is reached
   from it (attributes, items, iteration, `enumerate`, `list`, …) comes from
   there too.
2. Keys only Gmail's history and message answers use (`messagesAdded`,
   `labelIds`, `threadId`, `nextPageToken`, …) are indexed nowhere else, whatever
   the value: a dict handed on from `gmail/` loses its origin on the way, its keys
   do not. (Gmail's Pub/Sub notification, `{"emailAddress", "historyId"}`, is read
   where it arrives: `ingest/decode.py`.)
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.unit.layers.test_layers import PACKAGE_ROOT, _module_name, import_statements

# Rooms that speak Gmail's wire format by design.
EXEMPT = ("gmail", "gmail_sim", "devstack", "v1")
# Keys of Gmail's history.list / messages.get / getProfile answers that nothing of ours shares.
GMAIL_KEYS = frozenset({
    "history", "historyId", "nextPageToken", "messagesAdded", "messagesDeleted", "labelsAdded", "labelsRemoved",
    "labelIds", "threadId", "messagesTotal", "threadsTotal", "resultSizeEstimate",
})
# Where Gmail's notification payload is decoded (it arrives through Pub/Sub, not from gmail/).
NOTIFICATION_DECODER = "mailwatch.ingest.decode"
NOTIFICATION_KEYS = frozenset({"historyId"})
PASS_THROUGH = frozenset({"enumerate", "list", "tuple", "reversed", "sorted", "iter", "next", "zip", "dict", "set",
                          "filter", "max", "min"})


def _string_key(node: ast.AST) -> str | None:
    """The string constant `node` indexes with: `x["k"]` or `x.get("k", …)`."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.slice.value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return node.args[0].value
    return None


def _indexed(node: ast.AST) -> ast.AST:
    return node.value if isinstance(node, ast.Subscript) else node.func.value  # type: ignore[attr-defined]


def _names(annotation: ast.AST | None) -> set[str]:
    return {n.id for n in ast.walk(annotation) if isinstance(n, ast.Name)} if annotation is not None else set()


class _Origins:
    """Which expressions of one module hold values that come from gmail/."""

    def __init__(self, tree: ast.Module, gmail_names: set[str]) -> None:
        self.gmail_names = gmail_names  # names imported from mailwatch.gmail
        # Functions and methods of this module that return a gmail/ type.
        self.returning = {
            node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _names(node.returns) & gmail_names
        }

    def from_gmail(self, node: ast.AST, tainted: set[str]) -> bool:
        if isinstance(node, ast.Name):
            return node.id in tainted
        if isinstance(node, ast.Await):
            return self.from_gmail(node.value, tainted)
        if isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
            return self.from_gmail(node.value, tainted)
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                if func.id in self.gmail_names or func.id in self.returning:
                    return True
                if func.id in PASS_THROUGH:
                    return any(self.from_gmail(arg, tainted) for arg in node.args)
                return False
            if isinstance(func, ast.Attribute):
                receiver = func.value
                if isinstance(receiver, ast.Name) and receiver.id == "gmail":
                    return True
                if isinstance(receiver, ast.Attribute) and receiver.attr == "gmail":
                    return True
                if func.attr in self.returning:
                    return True
                return self.from_gmail(receiver, tainted)  # a method of a gmail/ value
        if isinstance(node, (ast.Tuple, ast.List)):
            return any(self.from_gmail(element, tainted) for element in node.elts)
        if isinstance(node, ast.IfExp):
            return self.from_gmail(node.body, tainted) or self.from_gmail(node.orelse, tainted)
        if isinstance(node, ast.BoolOp):
            return any(self.from_gmail(value, tainted) for value in node.values)
        return False


def _targets(target: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


def _own_nodes(scope: ast.AST):
    """The nodes of `scope` outside the functions nested in it."""
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.ClassDef):
            stack.extend(child for child in node.body if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.arg]:
    arguments = function.args
    return [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]


def _tainted_names(scope: ast.AST, origins: _Origins, seeded: set[str]) -> set[str]:
    """Names in `scope` (a function or the module) bound to values from gmail/, to a fixed point."""
    tainted = set(seeded)
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
        tainted.update(arg.arg for arg in _parameters(scope) if _names(arg.annotation) & origins.gmail_names)
    while True:
        before = len(tainted)
        for node in _own_nodes(scope):
            if isinstance(node, ast.Assign) and origins.from_gmail(node.value, tainted):
                for target in node.targets:
                    tainted.update(_targets(target))
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) and node.value is not None \
                    and origins.from_gmail(node.value, tainted):
                tainted.update(_targets(node.target))
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)) and origins.from_gmail(node.iter, tainted):
                tainted.update(_targets(node.target))
        if len(tainted) == before:
            return tainted


def _module_taint(tree: ast.Module, origins: _Origins) -> dict[ast.AST, set[str]]:
    """Tainted names per scope; a gmail/ value passed to a function or method of the
    module taints the parameter it lands in (to a fixed point over the module)."""
    functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    by_name = {function.name: function for function in functions}
    seeded: dict[ast.AST, set[str]] = {scope: set() for scope in [tree, *functions]}
    while True:
        taint = {scope: _tainted_names(scope, origins, seeded[scope] | (seeded[tree] if scope is not tree else set()))
                 for scope in seeded}
        changed = False
        for scope, names in taint.items():
            for call in _own_nodes(scope):
                if not isinstance(call, ast.Call):
                    continue
                func = call.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
                callee = by_name.get(name)
                if callee is None:
                    continue
                parameters = [arg.arg for arg in _parameters(callee)]
                if isinstance(func, ast.Attribute) and parameters[:1] in (["self"], ["cls"]):
                    parameters = parameters[1:]
                landed = [parameters[i] for i, arg in enumerate(call.args)
                          if i < len(parameters) and origins.from_gmail(arg, names)]
                landed += [kw.arg for kw in call.keywords if kw.arg and origins.from_gmail(kw.value, names)]
                new = set(landed) - seeded[callee]
                if new:
                    seeded[callee] |= new
                    changed = True
        if not changed:
            return taint


def border_crossings(root: Path = PACKAGE_ROOT) -> list[tuple[str, int, str]]:
    """(module, line, key) for every string index on a Gmail value, or with a Gmail key, outside gmail/."""
    found: set[tuple[str, int, str]] = set()
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        room = module.split(".")[1] if "." in module else ""
        if room in EXEMPT:
            continue
        tree = ast.parse(path.read_text(), str(path))
        gmail_names = {
            name for target, names in import_statements(path, root)
            if target == "mailwatch.gmail" or target.startswith("mailwatch.gmail.") for name in names
        }
        origins = _Origins(tree, gmail_names)
        allowed = NOTIFICATION_KEYS if module == NOTIFICATION_DECODER else frozenset()
        for scope, tainted in _module_taint(tree, origins).items():
            for node in _own_nodes(scope):
                key = _string_key(node)
                if key is None:
                    continue
                if origins.from_gmail(_indexed(node), tainted) or (key in GMAIL_KEYS and key not in allowed):
                    found.add((module, node.lineno, key))
    return sorted(found)


def test_nothing_outside_gmail_indexes_a_gmail_answer():
    assert border_crossings() == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "mailwatch"
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in [path.parent, *path.parent.parents]:
            if parent == root.parent:
                break
            (parent / "__init__.py").touch()
        path.write_text(source)
    return root


def test_the_rules_catch_the_shapes_gmail_json_leaked_in(tmp_path):
    # What the sync worker and history_events did with history.list's raw records.
    root = _package(tmp_path, {
        "gmail/client.py": "class HistoryPage: ...\n",
        "workers/sync.py": (
            "from mailwatch.gmail.client import HistoryPage\n"
            "class W:\n"
            "    async def _page(self) -> HistoryPage: ...\n"
            "    async def run(self):\n"
            "        page = await self._page()\n"
            "        for index, record in enumerate(page.records):\n"
            "            synced = int(record['id'])\n"
            "        newest = max(int(r['id']) for r in page.records)\n"
            "        profile = await self.gmail.profile()\n"
            "        total = profile.get('messagesTotal')\n"
            "        self.skip(page.records[0], note={'id': 1})\n"
            "    def later(self, page: HistoryPage):\n"
            "        return [r['id'] for r in page.records]\n"
            "    def skip(self, record: dict, note: dict):\n"
            "        return record['id'], note['id']\n"
        ),
        "sync/history_events.py": (
            "def labels(message: dict):\n"
            "    return message.get('labelIds')\n"
            "def thread(message):\n"
            "    return message['threadId']\n"
        ),
        "ingest/decode.py": "def decode(payload):\n    return payload['historyId'], payload['labelIds']\n",
        "domain/models.py": "def from_json(data):\n    return data.get('snippet'), data['id']\n",
        "gmail/errors.py": "def f(body):\n    return body['error']['errors'][0]['reason'], body['historyId']\n",
    })
    assert border_crossings(root) == [
        ("mailwatch.ingest.decode", 2, "labelIds"),  # only the notification's own keys are read there
        ("mailwatch.sync.history_events", 2, "labelIds"),
        ("mailwatch.sync.history_events", 4, "threadId"),
        ("mailwatch.workers.sync", 7, "id"),
        ("mailwatch.workers.sync", 8, "id"),
        ("mailwatch.workers.sync", 10, "messagesTotal"),
        ("mailwatch.workers.sync", 13, "id"),
        ("mailwatch.workers.sync", 15, "id"),  # handed on, as a plain dict; the other dict is ours
    ]
