"""`mailwatch gmail-sim`: serve the Gmail API simulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from mailwatch_devstack.gmail_sim.server import GmailSimulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailwatch gmail-sim", description="Run the Gmail API simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--pubsub-emulator-host", default=os.environ.get("PUBSUB_EMULATOR_HOST") or None,
                        help="HOST:PORT of the Pub/Sub emulator (default: $PUBSUB_EMULATOR_HOST)")
    parser.add_argument("--state-file", help="load mailboxes, credentials and settings from this JSON file at start "
                                             "(when it exists) and save them there on exit")
    args = parser.parse_args(argv)

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    sim = GmailSimulator(pubsub_emulator_host=args.pubsub_emulator_host, state_file=args.state_file)
    try:
        url = sim.start(host=args.host, port=args.port)
        print(f"gmail-sim listening on {url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
