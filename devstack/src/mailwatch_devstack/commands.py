"""The lab's `mailwatch` subcommands, registered under the entry point group
`mailwatch.commands` (see devstack/pyproject.toml): the service's command line
calls each with its subparsers and never imports this package itself.

Each adds one subcommand whose default `func(args)` runs it, or
`func(args, rest)` with `passthrough=True` to take its own arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_dev(sub) -> None:
    dev = sub.add_parser("dev", help="run a complete local stack (Postgres, Pub/Sub emulator, Gmail simulator, service)")
    dev.add_argument("--listen", default="127.0.0.1:50051", help="gRPC HOST:PORT (default 127.0.0.1:50051)")
    dev.add_argument("--sim-port", type=int, default=8089, help="Gmail simulator port (default 8089)")
    dev.add_argument("--trickle", type=float, default=0.0, metavar="SECONDS",
                     help="generate demo mailbox activity every SECONDS (default: off)")
    dev.add_argument("--embedded-postgres", action="store_true",
                     help="use the PostgreSQL server shipped as a Python package even when the system has one "
                          "(it is used anyway when no server binaries are found)")
    dev.add_argument("--data-dir", type=Path, metavar="DIR",
                     help="keep the stack's state (database, keys, simulator mailboxes) in DIR across restarts "
                          "(default: throwaway)")
    dev.set_defaults(func=_run_dev)


def _run_dev(args: argparse.Namespace) -> int:
    from mailwatch import event_loop
    from mailwatch.config import EVENT_LOOPS
    from mailwatch_devstack.stack import DevOptions, run_dev

    options = DevOptions(listen=args.listen, sim_port=args.sim_port, trickle_seconds=args.trickle,
                         embedded_postgres=args.embedded_postgres, data_dir=args.data_dir)
    # The service in the stack runs on the loop a deployment's does by default.
    return event_loop.run(EVENT_LOOPS[0], run_dev, options)


def add_gmail_sim(sub) -> None:
    sim = sub.add_parser("gmail-sim", help="run the Gmail API simulator (see `mailwatch gmail-sim --help`)",
                         add_help=False)
    sim.set_defaults(func=_run_gmail_sim, passthrough=True)


def _run_gmail_sim(args: argparse.Namespace, rest: list[str]) -> int:
    from mailwatch_devstack.gmail_sim.cli import main

    return main(rest)
