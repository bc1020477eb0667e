"""Only `store/` talks to the database driver: nothing else opens a session,
begins, commits or rolls back, chooses autocommit, or issues LISTEN/NOTIFY.

Store verbs take the `Sessions` handle (`mailwatch.store.db.Sessions`) and
open their own session in the mode the verb needs (`transaction`,
`autocommit`, `reading`). Everything else passes the handle along without
calling it, and imports neither SQLAlchemy nor psycopg.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.unit.layers.test_layers import PACKAGE_ROOT

_DRIVERS = ("sqlalchemy", "psycopg")
_TRANSACTION_CALLS = {"begin", "begin_nested", "commit", "rollback", "execution_options"}
_SESSION_FACTORY = re.compile(r"^_?(sessions|sessionmaker)$")
_MODE_KEYWORDS = {"isolation_level", "autocommit"}
# A statement in a string (not prose: docstrings and comments are skipped).
_SQL_WORDS = re.compile(
    r'^\s*(UN)?LISTEN\s+("[^"]+"|\w+|\{\w*\})\s*;?\s*$'  # LISTEN channel
    r'|\bNOTIFY\s+("[^"]+"|\w+|\{\w*\})\s*[,;]|\bpg_notify\('  # NOTIFY channel, 'payload'
    r'|^\s*(BEGIN|COMMIT|ROLLBACK)\s*;?\s*$'
)


def _called_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def violations(path: Path) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(), str(path))
    prose = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            names = []
        for name in names:
            if name.split(".")[0] in _DRIVERS:
                found.append(f"{line}: imports {name}")
        if isinstance(node, ast.Call):
            called = _called_name(node)
            if called in _TRANSACTION_CALLS:
                found.append(f"{line}: calls .{called}()")
            elif _SESSION_FACTORY.match(called):
                found.append(f"{line}: opens a session ({called}())")
            for keyword in node.keywords:
                if keyword.arg in _MODE_KEYWORDS:
                    found.append(f"{line}: chooses {keyword.arg}=")
        if isinstance(node, ast.Dict):
            for key in node.keys:
                if isinstance(key, ast.Constant) and key.value in _MODE_KEYWORDS:
                    found.append(f"{line}: chooses {key.value}=")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            if node.value == "AUTOCOMMIT" or _SQL_WORDS.search(node.value):
                found.append(f"{line}: SQL {node.value.split()[0]!r}")
    return found


def _outside_store() -> dict[str, list[str]]:
    result = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        relative = path.relative_to(PACKAGE_ROOT).as_posix()
        if relative.startswith(("store/", "v1/")):
            continue
        result[relative] = violations(path)
    return result


def test_nothing_outside_store_opens_a_session_or_chooses_a_transaction_mode():
    offending = {module: found for module, found in _outside_store().items() if found}
    assert not offending, f"database access outside store/ (use a store verb): {offending}"


def test_the_check_sees_each_kind_of_access(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from sqlalchemy.ext.asyncio import AsyncSession\n"
        "async def f(self, sessions):\n"
        "    async with self.sessions() as session, session.begin():\n"
        "        await session.commit()\n"
        "    async with sessions() as session:\n"
        "        await session.connection(execution_options={'isolation_level': 'AUTOCOMMIT'})\n"
        "    await conn.execute('LISTEN mailwatch_changes')\n"
        "    log.info('LISTEN connections established')\n"
    )
    found = violations(sample)
    kinds = {entry.split(": ", 1)[1].split(" ")[0] for entry in found}
    assert kinds == {"imports", "opens", "calls", "chooses", "SQL"}
    assert [entry for entry in found if "'LISTEN'" in entry] == ["7: SQL 'LISTEN'"]  # the log line is prose
