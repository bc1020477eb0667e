"""benchmarks/raw_floor.py, the bare-library floor pipeline.py measures next to the service: on the
real peers (Postgres, the Pub/Sub emulator, the Gmail simulator) each change reaches its stream
with its labels (from history, or from messages.get when history leaves them out, as the
service does), the CPU ledger charges every one of the round trips' parts, and the service's
own tables are never written."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc
import psycopg
import pytest

from benchmarks.raw_floor import FLOOR_DOMAIN, LABELS_PART, PARTS, READY, SCHEMA, SERVICE, floor_emails
from mailwatch.database_url import libpq_url
from mailwatch.v1 import mailbox_service_pb2, resources_pb2
from tests.fixtures.names import TEST_PROJECT
from tests.fixtures.processes import Child, child_env
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration

RAW_FLOOR = Path(__file__).resolve().parents[3] / "benchmarks" / "raw_floor.py"


async def test_each_change_reaches_the_floors_stream_and_every_part_is_charged(
        database_url, gmail_sim, pubsub_topic, pubsub_emulator, tmp_path):
    emails = floor_emails(2)
    gmail_sim.create_mailboxes(emails)
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(gmail_sim.create_service_account_key(
        project_id=TEST_PROJECT, delegate_domains=[FLOOR_DOMAIN])))
    floor = Child("raw-floor", [
        sys.executable, str(RAW_FLOOR), "--database-url", libpq_url(database_url), "--sim-url", gmail_sim.url,
        "--topic", pubsub_topic["topic"], "--subscription", pubsub_topic["subscription"],
        "--key-file", str(key_file), "--mailboxes", str(len(emails)),
    ], child_env({"PUBSUB_EMULATOR_HOST": pubsub_emulator.host}), tmp_path)
    target = floor.start(READY, timeout=90).group(1)
    rounds = []  # per history shape: (changes inserted, events streamed, ledger before, ledger after)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            ledger = channel.unary_unary(f"/{SERVICE}/Ledger")
            stream = channel.unary_stream(f"/{SERVICE}/Changes",
                                          response_deserializer=mailbox_service_pb2.StreamChangesResponse.FromString)
            call = stream(b"")
            assert not (await call.read()).events  # open
            for history_label_ids in (True, False):
                gmail_sim.configure(history_label_ids=history_label_ids)
                gmail_sim.advance_clock(2)  # past Gmail's one notification per second (the watch's, the last round's)
                before = json.loads(await ledger(b"", timeout=30))
                inserted = {(m["emailAddress"], m["id"]) for m in gmail_sim.insert_messages(
                    [{"emailAddress": email, "labelIds": ["INBOX", "UNREAD"]} for email in emails])}
                events: list = []

                async def all_arrived() -> None:
                    while not inserted <= {(e.email_address, e.message_id) for e in events}:
                        events.extend((await call.read()).events)

                await asyncio.wait_for(all_arrived(), timeout=60)

                async def counted() -> dict | None:
                    # A change can reach the stream by a sync an earlier notification started (one
                    # pulled before `before`, its sync run after the insert on a loaded host), and
                    # its own notification be pulled later: the ledger is read once it is counted.
                    now = json.loads(await ledger(b"", timeout=30))
                    pulled = now["counts"].get("notifications", 0) - before["counts"].get("notifications", 0)
                    return now if pulled >= len(inserted) else None

                after = await eventually(counted, timeout=60, what="this round's notifications in the ledger")
                rounds.append((inserted, events, before, after))
            call.cancel()
    finally:
        assert floor.stop() == 0, floor.tail()

    for history_label_ids, (inserted, events, before, after) in zip((True, False), rounds):
        assert sorted((e.email_address, e.message_id) for e in events) == sorted(inserted)
        assert all(e.type == resources_pb2.EVENT_TYPE_MESSAGE_ADDED for e in events)
        assert all(sorted(e.label_ids) == ["INBOX", "UNREAD"] for e in events)
        charged = {part: after.get(part, 0.0) - before.get(part, 0.0) for part in PARTS}
        assert all(seconds > 0 for seconds in charged.values()), charged
        # Labels are looked up only when the history leaves them out.
        looked_up = after.get(LABELS_PART, 0.0) - before.get(LABELS_PART, 0.0)
        assert (looked_up > 0) is not history_label_ids, looked_up

    with psycopg.connect(libpq_url(database_url)) as conn:
        assert conn.execute(f"SELECT count(*) FROM {SCHEMA}.changes").fetchone()[0] == 2 * len(emails)
        # The service's own tables: the floor writes only its scratch schema.
        assert conn.execute("SELECT count(*) FROM mailboxes").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM change_events").fetchone()[0] == 0
