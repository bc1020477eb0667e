"""GetMessage, SendTestEvent and metadata through the client library (sync and asyncio)."""

from __future__ import annotations

import asyncio
import email
import email.policy

import pytest

from mailwatch.tail import format_event
from mailwatch_client import AsyncMailwatchClient, EventType, MailwatchClient, NotFoundError
from tests.integration.client.conftest import api_key_of, sa_credentials

pytestmark = pytest.mark.integration


async def test_get_message_reassembles_chunks_async(service):
    _, auth = await service.new_tenant()
    sim = service.sim
    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        mailbox = await client.register_mailbox("ann@example.com", credentials=sa_credentials(sim, "ann@example.com"))
        body = "x" * (3 * 1024 * 1024) + "\nend\n"
        message = sim.insert_message("ann@example.com", label_ids=["INBOX"], subject="Big", body=body)

        raw = await client.get_message(mailbox.id, message["id"], format="raw")
        assert raw.message.raw_size == len(raw.raw)
        assert email.message_from_bytes(raw.raw, policy=email.policy.default)["Subject"] == "Big"

        full = await client.get_message(mailbox.id, message["id"], format="full")
        root = full.message.payload
        assert full.part_bodies[root.part_id].replace(b"\r\n", b"\n") == body.encode()

        meta = await client.get_message(mailbox.id, message["id"], metadata_headers=["Subject"])
        assert [(h.name, h.value) for h in meta.message.metadata.headers] == [("Subject", "Big")]
        assert meta.raw is None and meta.part_bodies == {}

        with pytest.raises(NotFoundError):
            sim.delete_message("ann@example.com", message["id"])
            await client.get_message(mailbox.id, message["id"])
        with pytest.raises(ValueError):
            await client.get_message(mailbox.id, message["id"], format="html")


async def test_test_event_and_metadata_through_the_sync_client_and_tail(service):
    _, auth = await service.new_tenant()
    sim = service.sim

    def scenario():
        with MailwatchClient(service.target, api_key_of(auth)) as client:
            mailbox = client.register_mailbox(
                "bob@example.com", credentials=sa_credentials(sim, "bob@example.com"),
                message_metadata=["From", "Subject"],
            )
            assert mailbox.metadata.enabled and list(mailbox.metadata.headers) == ["From", "Subject"]
            sim.advance_clock(2)
            message = sim.insert_message("bob@example.com", label_ids=["INBOX"], subject="Lunch?",
                                         sender="Carol <carol@example.com>")
            sent = client.send_test_event(mailbox.id, note="wiring check")
            assert sent.type == EventType.Value("EVENT_TYPE_TEST")
            seen = []
            with client.stream_changes(start="earliest") as stream:
                for event in stream:
                    seen.append(event)
                    if any(e.message_id == message["id"] for e in seen):
                        break
            return message, sent, seen

    message, sent, seen = await asyncio.to_thread(scenario)
    assert sent.id in [e.id for e in seen]
    [added] = [e for e in seen if e.message_id == message["id"]]
    line = format_event(added, as_json=False)
    assert "from='Carol <carol@example.com>'" in line and "subject='Lunch?'" in line
    as_json = format_event(added, as_json=True)
    assert '"metadata":{"headers":[["From","Carol <carol@example.com>"],["Subject","Lunch?"]]' in as_json
    test_line = format_event([e for e in seen if e.id == sent.id][0], as_json=False)
    assert "TEST" in test_line and "note=wiring check" in test_line
