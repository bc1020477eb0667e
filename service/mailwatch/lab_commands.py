"""Subcommands that other installed distributions add to `mailwatch`.

The lab (`mailwatch dev`, `mailwatch gmail-sim`) lives in the separate
mailwatch-devstack distribution, which the service never imports: it registers
its commands under the entry point group `mailwatch.commands`, each a callable
`add(subparsers)` that adds one subcommand (default `func(args)`, or
`func(args, rest)` with `passthrough=True`). Without it, the lab's commands
still exist and say how to install it.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

GROUP = "mailwatch.commands"

# The lab's commands, shown in `mailwatch --help` even when it is not installed.
LAB_COMMANDS = {
    "dev": "run a complete local stack (Postgres, Pub/Sub emulator, Gmail simulator, service)",
    "gmail-sim": "run the Gmail API simulator",
}

INSTALL_HINT = (
    "mailwatch {command}: this command is part of mailwatch's lab, the mailwatch-devstack distribution, "
    "which is not installed here. From a clone of the repository, install it next to the service: "
    "pip install -e devstack (README.md's first command does)."
)


def add_lab_commands(sub: argparse._SubParsersAction, found=None) -> None:
    """Adds every registered command (`found`: the group's entry points, by default the installed ones)."""
    registered = set()
    for entry_point in entry_points(group=GROUP) if found is None else found:
        entry_point.load()(sub)
        registered.add(entry_point.name)
    for name, help_text in LAB_COMMANDS.items():
        if name not in registered:
            missing = sub.add_parser(name, help=f"{help_text} (needs mailwatch-devstack)", add_help=False)
            missing.set_defaults(func=_not_installed(name), passthrough=True)


def _not_installed(command: str):
    def explain(args: argparse.Namespace, rest: list[str]) -> int:
        print(INSTALL_HINT.format(command=command), file=sys.stderr)
        return 2

    return explain
