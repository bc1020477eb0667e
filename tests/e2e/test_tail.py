"""`mailwatch tail` as a user runs it: a child process against a running service."""

from __future__ import annotations

import asyncio
import email.policy
import json
import os
import re
import signal
import sys
from email.message import EmailMessage

import pytest

from mailwatch_client import AsyncMailwatchClient, cursor_from_str
from tests.fixtures.waiting import eventually
from tests.integration.client.conftest import api_key_of, sa_credentials

pytestmark = pytest.mark.e2e

LAST_CURSOR = re.compile(r"last cursor: (\S+)")


class Tail:
    """`python -m mailwatch.cli tail ...` with its stdout read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    @classmethod
    async def start(cls, target: str, api_key: str, *args: str) -> "Tail":
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILWATCH_")}
        env.update(MAILWATCH_TARGET=target, MAILWATCH_API_KEY=api_key)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mailwatch.cli", "tail", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def read_until(self, predicate, timeout: float = 30.0) -> list[str]:
        async def read():
            while not predicate(self.lines):
                line = await self.process.stdout.readline()
                if not line:
                    raise AssertionError(f"tail exited early: {await self.process.stderr.read()!r}")
                self.lines.append(line.decode().rstrip("\n"))

        await asyncio.wait_for(read(), timeout)
        return self.lines

    async def exited(self, timeout: float = 30.0) -> tuple[int, str]:
        """Its exit code and stderr, once it has ended."""
        _, stderr = await asyncio.wait_for(self.process.communicate(), timeout)
        return self.process.returncode, stderr.decode()

    async def interrupt(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        return await self.exited()

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


def count(kind: str):
    return lambda lines: sum(kind in line for line in lines)


async def test_tail_prints_events_and_stops_on_sigint_with_the_last_cursor(service):
    _, auth = await service.new_tenant()
    key = api_key_of(auth)
    sim = service.sim
    async with AsyncMailwatchClient(service.target, key) as client:
        await client.register_mailbox("tom@example.com", credentials=sa_credentials(sim, "tom@example.com"))
    first = sim.insert_message("tom@example.com", label_ids=["INBOX", "UNREAD"])

    tail = await Tail.start(service.target, key, "--from", "earliest")
    try:
        await tail.read_until(lambda lines: count("MESSAGE_ADDED")(lines) >= 1)
        live = sim.insert_message("tom@example.com", label_ids=["INBOX"])  # arrives while tailing
        lines = await tail.read_until(lambda lines: count("MESSAGE_ADDED")(lines) >= 2)
        code, stderr = await tail.interrupt()
    finally:
        tail.kill()
    assert code == 0, stderr
    assert "WATCH_STARTED" in lines[0] and "tom@example.com" in lines[0]
    added = [line for line in lines if "MESSAGE_ADDED" in line]
    assert f"message={first['id']}" in added[0] and "labels=INBOX,UNREAD" in added[0]
    assert f"message={live['id']}" in added[1]
    assert "Traceback" not in stderr
    cursor = LAST_CURSOR.search(stderr).group(1)
    assert cursor_from_str(cursor)

    # The printed cursor resumes right after the last printed event (JSON this time).
    later = sim.insert_message("tom@example.com", label_ids=["INBOX"])
    tail = await Tail.start(service.target, key, "--from", cursor, "--json", "--types", "MESSAGE_ADDED")
    try:
        lines = await tail.read_until(lambda lines: len(lines) >= 1)
        code, stderr = await tail.interrupt()
    finally:
        tail.kill()
    assert code == 0, stderr
    event = json.loads(lines[0])
    assert event["type"] == "MESSAGE_ADDED" and event["message_id"] == later["id"]
    assert event["email_address"] == "tom@example.com" and event["cursor"]
    assert LAST_CURSOR.search(stderr).group(1) == event["cursor"], (stderr, lines)


async def test_tail_reports_a_bad_key_without_a_traceback(service):
    tail = await Tail.start(service.target, "wrong-key", "--from", "earliest")
    try:
        code, stderr = await tail.exited()
    finally:
        tail.kill()
    assert code == 1
    assert "UNAUTHENTICATED" in stderr and "Traceback" not in stderr


async def test_tail_saves_each_new_messages_attachments(service, tmp_path):
    """--save-attachments: two attachments (one of 5 MB) byte-exact under DIR/<message id>/,
    a hostile file name kept inside that folder, a message without attachments leaves nothing."""
    _, auth = await service.new_tenant()
    key = api_key_of(auth)
    sim = service.sim
    async with AsyncMailwatchClient(service.target, key) as client:
        await client.register_mailbox("att@example.com", credentials=sa_credentials(sim, "att@example.com"))
    large, small = os.urandom(5 * 1024 * 1024 + 1), b"col1,col2\n1,2\n"
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "bob@example.com", "att@example.com", "Files"
    message.set_content("Two files.")
    message.add_attachment(large, maintype="application", subtype="octet-stream", filename="data.bin")
    message.add_attachment(small, maintype="text", subtype="csv", filename="../../escape.csv")
    plain = sim.insert_message("att@example.com", label_ids=["INBOX"])  # no attachments: no folder
    inserted = sim.insert_raw_message("att@example.com", message.as_bytes(policy=email.policy.SMTP),
                                      label_ids=["INBOX"])

    folder = tmp_path / inserted["id"]
    tail = await Tail.start(service.target, key, "--from", "earliest", "--types", "MESSAGE_ADDED",
                            "--save-attachments", str(tmp_path))
    try:
        await tail.read_until(lambda lines: any(inserted["id"] in line for line in lines))
        await eventually(lambda: {p.name for p in folder.iterdir()} == {"data.bin", "escape.csv"}
                         and (folder / "data.bin").stat().st_size == len(large) if folder.exists() else False)
        code, stderr = await tail.interrupt()
    finally:
        tail.kill()
    assert code == 0, stderr
    assert (folder / "data.bin").read_bytes() == large
    assert (folder / "escape.csv").read_bytes().replace(b"\r\n", b"\n") == small
    assert sorted(p.name for p in tmp_path.iterdir()) == [inserted["id"]], "nothing outside the message folders"
    assert not (tmp_path / plain["id"]).exists()
    assert f"saved {folder / 'data.bin'}" in stderr and "Traceback" not in stderr
