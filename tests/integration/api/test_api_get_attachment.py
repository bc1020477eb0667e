"""GetAttachment: an attachment far past gRPC's 4 MiB arrives byte-exact through the client
library's twins, from a message inserted as its RFC 822 source (the simulator serves it with
users.messages.attachments.get behind the real google-api-python-client)."""

from __future__ import annotations

import asyncio
import email.policy
import hashlib
import os
from email.message import EmailMessage

import grpc
import pytest

from mailwatch.v1 import mailbox_service_pb2
from mailwatch_client import AsyncMailwatchClient, MailwatchClient, NotFoundError, RetryConfig
from tests.fixtures.rpc import error_details, sa_request
from tests.integration.client.conftest import api_key_of, sa_credentials

pytestmark = pytest.mark.integration

LARGE = os.urandom(12 * 1024 * 1024 + 7)  # 12 MB and change: three times gRPC's default message limit
SMALL = b"%PDF-1.4\n" + bytes(range(256)) * 8


def source(*, large: bool = True) -> bytes:
    """A message with report.pdf and, unless `large` is false, the 12 MB data.bin."""
    message = EmailMessage()
    message["From"] = "Bob <bob@example.com>"
    message["To"] = "att@example.com"
    message["Subject"] = "Data"
    message.set_content("The data is attached.")
    message.add_attachment(SMALL, maintype="application", subtype="pdf", filename="report.pdf")
    if large:
        message.add_attachment(LARGE, maintype="application", subtype="octet-stream", filename="data.bin")
    return message.as_bytes(policy=email.policy.SMTP)


def _attachment_ids(message) -> dict[str, str]:
    """filename -> attachment id, from a FULL message's MIME tree."""
    found, todo = {}, [message.payload]
    while todo:
        part = todo.pop()
        if part.attachment_id:
            found[part.filename] = part.attachment_id
        todo.extend(part.parts)
    return found


def _attachment_calls(sim, email: str) -> int:
    return sim.counters()["calls"].get(email, {}).get("users.messages.attachments.get", 0)


async def test_a_12_mb_attachment_arrives_byte_exact(service):
    sim = service.sim
    _, auth = await service.new_tenant()
    credentials = sa_credentials(sim, "att@example.com")
    inserted = sim.insert_raw_message("att@example.com", source(), label_ids=["INBOX"])

    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        mailbox = await client.register_mailbox("att@example.com", credentials=credentials)
        full = await client.get_message(mailbox.id, inserted["id"], format="full")
        ids = _attachment_ids(full.message)
        assert set(ids) == {"report.pdf", "data.bin"}
        data = await client.get_attachment(mailbox.id, inserted["id"], ids["data.bin"])
        assert len(data) == len(LARGE) and hashlib.sha256(data).digest() == hashlib.sha256(LARGE).digest()

    # The wire: a size first, then chunks of at most 1 MiB adding up to it.
    responses = [r async for r in service.mailboxes.GetAttachment(mailbox_service_pb2.GetAttachmentRequest(
        mailbox_id=mailbox.id, message_id=inserted["id"], attachment_id=ids["data.bin"]), metadata=auth)]
    assert responses[0].WhichOneof("content") == "size" and responses[0].size == len(LARGE)
    chunks = [r.data for r in responses[1:]]
    assert all(r.WhichOneof("content") == "data" for r in responses[1:])
    assert max(map(len, chunks)) <= 1024 * 1024 and len(chunks) == 13
    assert b"".join(chunks) == LARGE

    def sync_twin():
        with MailwatchClient(service.target, api_key_of(auth)) as client:
            return client.get_attachment(mailbox.id, inserted["id"], ids["report.pdf"])

    assert await asyncio.to_thread(sync_twin) == SMALL


async def test_unknown_attachment_gone_message_and_another_tenant(service):
    sim = service.sim
    _, alice = await service.new_tenant()
    _, bob = await service.new_tenant()
    mailbox = await service.mailboxes.RegisterMailbox(sa_request(sim, "att2@example.com"), metadata=alice)
    inserted = sim.insert_raw_message("att2@example.com", source(large=False), label_ids=["INBOX"])
    async with AsyncMailwatchClient(service.target, api_key_of(alice)) as client:
        ids = _attachment_ids((await client.get_message(mailbox.id, inserted["id"], format="full")).message)

    async def reason_of(metadata, **fields) -> tuple[grpc.StatusCode, str]:
        request = mailbox_service_pb2.GetAttachmentRequest(
            **{"mailbox_id": mailbox.id, "message_id": inserted["id"], "attachment_id": ids["report.pdf"], **fields})
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in service.mailboxes.GetAttachment(request, metadata=metadata):
                pass
        info, _ = error_details(caught.value)
        return caught.value.code(), info.reason

    before = _attachment_calls(sim, "att2@example.com")
    assert await reason_of(bob) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    assert _attachment_calls(sim, "att2@example.com") == before, "no Gmail call for another tenant's mailbox"
    # An id of another message is not one of this message's attachments.
    other = sim.insert_raw_message("att2@example.com", source(large=False), label_ids=["INBOX"])
    assert await reason_of(alice, message_id=other["id"]) == (grpc.StatusCode.NOT_FOUND, "ATTACHMENT_NOT_FOUND")
    sim.delete_message("att2@example.com", inserted["id"])
    assert await reason_of(alice) == (grpc.StatusCode.NOT_FOUND, "MESSAGE_NOT_FOUND")
    async with AsyncMailwatchClient(service.target, api_key_of(alice)) as client:
        with pytest.raises(NotFoundError):
            await client.get_attachment(mailbox.id, inserted["id"], ids["report.pdf"])


async def test_a_12_mb_attachment_streams_chunk_by_chunk_in_both_twins(service):
    """get_attachment_stream hands over the chunks as they arrive (each at most the server's 1 MiB),
    so a consumer can write a large attachment to disk without holding it whole."""
    sim = service.sim
    _, alice = await service.new_tenant()
    _, bob = await service.new_tenant()
    credentials = sa_credentials(sim, "stream@example.com")
    inserted = sim.insert_raw_message("stream@example.com", source(), label_ids=["INBOX"])
    expected = hashlib.sha256(LARGE).digest()

    def received(sizes: list[int], digest) -> None:
        assert sum(sizes) == len(LARGE) and digest.digest() == expected
        assert len(sizes) == 13 and max(sizes) <= 1024 * 1024, sizes

    async with AsyncMailwatchClient(service.target, api_key_of(alice)) as client:
        mailbox = await client.register_mailbox("stream@example.com", credentials=credentials)
        ids = _attachment_ids((await client.get_message(mailbox.id, inserted["id"], format="full")).message)
        sizes, digest = [], hashlib.sha256()
        async for chunk in client.get_attachment_stream(mailbox.id, inserted["id"], ids["data.bin"]):
            sizes.append(len(chunk))
            digest.update(chunk)
        received(sizes, digest)
        # Stopping early ends the call; the client stays usable.
        async for chunk in client.get_attachment_stream(mailbox.id, inserted["id"], ids["data.bin"]):
            assert chunk == LARGE[:len(chunk)]
            break
        assert [c async for c in client.get_attachment_stream(mailbox.id, inserted["id"], ids["report.pdf"])] == [
            SMALL]

    def sync_twin():
        with MailwatchClient(service.target, api_key_of(alice)) as client:
            sizes, digest = [], hashlib.sha256()
            for chunk in client.get_attachment_stream(mailbox.id, inserted["id"], ids["data.bin"]):
                sizes.append(len(chunk))
                digest.update(chunk)
            return sizes, digest

    received(*await asyncio.to_thread(sync_twin))

    # Another tenant's mailbox is NOT_FOUND through the stream too, as the typed error.
    async with AsyncMailwatchClient(service.target, api_key_of(bob)) as client:
        with pytest.raises(NotFoundError):
            async for _ in client.get_attachment_stream(mailbox.id, inserted["id"], ids["data.bin"]):
                pass

    def sync_other_tenant():
        with MailwatchClient(service.target, api_key_of(bob)) as client:
            with pytest.raises(NotFoundError):
                for _ in client.get_attachment_stream(mailbox.id, inserted["id"], ids["data.bin"]):
                    pass

    await asyncio.to_thread(sync_other_tenant)


async def test_the_stream_is_retried_on_unavailable_before_its_first_chunk(service):
    sim = service.sim
    _, auth = await service.new_tenant()
    credentials = sa_credentials(sim, "flakyatt@example.com")
    inserted = sim.insert_raw_message("flakyatt@example.com", source(large=False), label_ids=["INBOX"])
    quick = RetryConfig(initial_backoff=0.05, max_backoff=0.2, max_attempts=5)
    async with AsyncMailwatchClient(service.target, api_key_of(auth), retry=quick) as client:
        mailbox = await client.register_mailbox("flakyatt@example.com", credentials=credentials)
        ids = _attachment_ids((await client.get_message(mailbox.id, inserted["id"], format="full")).message)
        # Gmail answers 500 twice: the server says UNAVAILABLE before any chunk, the client tries again.
        sim.inject_fault("backendError", method="users.messages.attachments.get", count=2)
        before = _attachment_calls(sim, "flakyatt@example.com")
        chunks = [c async for c in client.get_attachment_stream(mailbox.id, inserted["id"], ids["report.pdf"])]
        assert b"".join(chunks) == SMALL
        assert _attachment_calls(sim, "flakyatt@example.com") - before == 3

    def sync_twin():
        with MailwatchClient(service.target, api_key_of(auth), retry=quick) as client:
            sim.inject_fault("backendError", method="users.messages.attachments.get", count=1)
            return b"".join(client.get_attachment_stream(mailbox.id, inserted["id"], ids["report.pdf"]))

    before = _attachment_calls(sim, "flakyatt@example.com")
    assert await asyncio.to_thread(sync_twin) == SMALL
    assert _attachment_calls(sim, "flakyatt@example.com") - before == 2
