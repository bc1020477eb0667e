"""CPU of mailwatch's Gmail exchanges alone: GmailClient against the simulator in a child process.

Measures this process's CPU seconds (every thread, so a transport on a thread pool
counts too) per call for the calls a sync makes: `history.list` (one request) and
`message_labels` (the batched `messages.get`, 1 and 10 parts), `--concurrency` calls
at once as the sync workers make them, round-robin over `--mailboxes` mailboxes (Gmail's
per-user rate limit refuses one mailbox's calls at this rate). The simulator is a child
process, so its CPU is not counted; the figure is the client's own cost (library, transport, token,
budget, user slot, metrics), steadier on a loaded host than the whole pipeline's.

    python benchmarks/gmail_exchange.py [--calls 2000] [--concurrency 16] [--mailboxes 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time

from mailwatch.config import GmailSettings
from mailwatch.domain.models import ServiceAccountCredential
from mailwatch.gmail.client import GmailClient
from mailwatch_devstack.gmail_sim.control import SimulatorControl

DOMAIN = "bench.example.com"


def start_simulator() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "mailwatch.cli", "gmail-sim", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        found = re.search(r"gmail-sim listening on (http://\S+)", line)
        if found:
            return process, found.group(1)
    process.wait()
    raise RuntimeError("the simulator exited before listening")


async def measure(gmail: GmailClient, name: str, calls: int, concurrency: int, one) -> None:
    queue = list(range(calls))

    async def worker() -> None:
        while queue:
            await one(queue.pop())

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"{name}: {calls} calls in {wall:.1f}s, CPU {cpu:.3f}s = {cpu / calls * 1000:.3f} ms per call")


async def main(args: argparse.Namespace) -> None:
    process, url = start_simulator()
    try:
        control = SimulatorControl(url)
        emails = [f"user{i}@{DOMAIN}" for i in range(args.mailboxes)]
        start = {box["emailAddress"]: int(box["historyId"]) for box in control.create_mailboxes(emails)}
        key = control.create_service_account_key(name="bench", project_id="bench", delegate_domains=[DOMAIN])
        ids = {email: [control.insert_message(email, label_ids=["INBOX"])["id"] for _ in range(10)]
               for email in emails}
        creds = {email: ServiceAccountCredential(info=key, subject=email) for email in emails}
        gmail = GmailClient(GmailSettings(api_endpoint=url, token_uri=f"{url}/token"), max_workers=args.concurrency)
        try:
            async def history(call: int) -> None:
                email = emails[call % len(emails)]
                await gmail.history_page(creds[email], email, start_history_id=start[email])

            def labels(parts: int):
                async def one(call: int) -> None:
                    email = emails[call % len(emails)]
                    await gmail.message_labels(creds[email], email, ids[email][:parts])
                return one

            # one call per mailbox first: its token is fetched then, not in the measures
            await measure(gmail, "warm-up", len(emails), args.concurrency, history)
            await measure(gmail, "history.list", args.calls, args.concurrency, history)
            await measure(gmail, "messages.get batch, 1 part", args.calls, args.concurrency, labels(1))
            await measure(gmail, "messages.get batch, 10 parts", args.calls // 4, args.concurrency, labels(10))
        finally:
            gmail.close()
    finally:
        process.terminate()
        process.wait()
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per measure (default 2000)")
    parser.add_argument("--concurrency", type=int, default=16, help="calls at once (default 16)")
    parser.add_argument("--mailboxes", type=int, default=64, help="mailboxes called round-robin (default 64)")
    arguments = parser.parse_args()
    print(f"load average at the start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    asyncio.run(main(arguments))
