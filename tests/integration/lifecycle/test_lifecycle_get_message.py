"""GetMessage and SendTestEvent over a real channel, against the Gmail simulator."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import grpc
import pytest

from mailwatch.v1 import mailbox_service_pb2, resources_pb2
from tests.fixtures.pipeline import collect, types
from tests.fixtures.rpc import error_details, sa_request

pytestmark = pytest.mark.integration

FORMAT = mailbox_service_pb2


async def get_message(service, auth, mailbox_id, message_id, fmt, **fields):
    """All responses of one GetMessage call."""
    request = mailbox_service_pb2.GetMessageRequest(mailbox_id=mailbox_id, message_id=message_id, format=fmt, **fields)
    return [response async for response in service.mailboxes.GetMessage(request, metadata=auth)]


async def test_get_message_in_every_format_including_a_source_over_4_mb(make_service):
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        _, auth = await service.new_tenant()
        mailbox = await service.mailboxes.RegisterMailbox(sa_request(sim, "reader@example.com"), metadata=auth)
        body = "".join(f"line {n:07d} of a long report\n" for n in range(200_000))  # ~5.6 MB
        big = sim.insert_message("reader@example.com", label_ids=["INBOX", "UNREAD"], subject="Quarterly numbers",
                                 body=body, headers=[("X-Ticket", "T-7")])

        [metadata] = await get_message(service, auth, mailbox.id, big["id"], FORMAT.MESSAGE_FORMAT_METADATA,
                                       metadata_headers=["Subject", "X-Ticket"])
        message = metadata.message
        assert message.id == big["id"] and message.thread_id == big["threadId"]
        assert set(message.label_ids) == {"INBOX", "UNREAD"}
        assert {(h.name, h.value) for h in message.metadata.headers} == {("Subject", "Quarterly numbers"),
                                                                           ("X-Ticket", "T-7")}
        assert message.metadata.size_estimate > 5_000_000
        assert not message.HasField("payload") and message.raw_size == 0

        raw_responses = await get_message(service, auth, mailbox.id, big["id"], FORMAT.MESSAGE_FORMAT_RAW)
        head, chunks = raw_responses[0].message, [r.raw_chunk for r in raw_responses[1:]]
        assert len(chunks) >= 6 and all(len(c) <= 1024 * 1024 for c in chunks)
        raw = b"".join(chunks)
        assert head.raw_size == len(raw) > 4 * 1024 * 1024
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert parsed["Subject"] == "Quarterly numbers"
        assert parsed.get_content().replace("\r\n", "\n") == body

        full_responses = await get_message(service, auth, mailbox.id, big["id"], FORMAT.MESSAGE_FORMAT_FULL)
        payload = full_responses[0].message.payload
        assert payload.mime_type.startswith("text/plain")
        assert any(h.name == "Subject" and h.value == "Quarterly numbers" for h in payload.headers)
        bodies: dict[str, bytearray] = {}
        for response in full_responses[1:]:
            bodies.setdefault(response.part_chunk.part_id, bytearray()).extend(response.part_chunk.data)
        assert bytes(bodies[payload.part_id]).decode() .replace("\r\n", "\n") == body
        assert payload.body_size == len(bodies[payload.part_id])


async def test_raw_format_carries_the_headers_as_full_does(service):
    """The proto promises every header for RAW as for FULL; Gmail's format=raw has no payload to take them from."""
    sim = service.sim
    _, auth = await service.new_tenant()
    mailbox = await service.mailboxes.RegisterMailbox(sa_request(sim, "headers@example.com"), metadata=auth)
    mail = EmailMessage()
    mail["From"] = "Carol <carol@example.com>"
    mail["To"] = "headers@example.com"
    mail["Subject"] = "A subject long enough that it is folded " + "over several lines " * 6
    mail["X-Ticket"] = "T-9"
    mail.set_content("see attachment")
    mail.add_attachment(b"%PDF-1.4 ...", maintype="application", subtype="pdf", filename="a.pdf")
    source = mail.as_bytes(policy=email.policy.SMTP)
    assert b"over\r\n several" in source  # the Subject is folded in the source
    inserted = sim.insert_raw_message("headers@example.com", source)

    [raw_head, *chunks] = await get_message(service, auth, mailbox.id, inserted["id"], FORMAT.MESSAGE_FORMAT_RAW)
    assert b"".join(r.raw_chunk for r in chunks) == source
    full = (await get_message(service, auth, mailbox.id, inserted["id"], FORMAT.MESSAGE_FORMAT_FULL))[0].message
    raw_headers = [(h.name, h.value) for h in raw_head.message.metadata.headers]
    assert raw_headers == [(h.name, h.value) for h in full.metadata.headers]
    assert raw_headers == [(name, " ".join(str(value).split())) for name, value in mail.items()]
    assert ("X-Ticket", "T-9") in raw_headers and raw_head.message.metadata.snippet == "see attachment"


async def test_get_message_errors_and_isolation(make_service):
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        _, auth = await service.new_tenant()
        _, other_auth = await service.new_tenant()
        mailbox = await service.mailboxes.RegisterMailbox(sa_request(sim, "mine@example.com"), metadata=auth)
        message = sim.insert_message("mine@example.com", label_ids=["INBOX"])

        # Another tenant: the mailbox does not exist for it, and Gmail is never asked.
        sim.reset_counters()
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await get_message(service, other_auth, mailbox.id, message["id"], FORMAT.MESSAGE_FORMAT_RAW)
        assert other.value.code() is grpc.StatusCode.NOT_FOUND
        assert error_details(other.value)[0].reason == "NOT_FOUND"
        assert sim.counters()["totalCalls"] == 0

        # A message Gmail no longer has.
        sim.delete_message("mine@example.com", message["id"])
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await get_message(service, auth, mailbox.id, message["id"], FORMAT.MESSAGE_FORMAT_METADATA)
        assert gone.value.code() is grpc.StatusCode.NOT_FOUND
        assert error_details(gone.value)[0].reason == "MESSAGE_NOT_FOUND"

        # Bad input names its field.
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await get_message(service, auth, mailbox.id, "not-a-gmail-id!", FORMAT.MESSAGE_FORMAT_FULL,
                              metadata_headers=["Subject"])
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        fields = {v.field for v in error_details(bad.value)[1].field_violations}
        assert fields == {"message_id", "metadata_headers"}


async def test_send_test_event_arrives_on_the_tenants_stream_only(make_service):
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        _, auth = await service.new_tenant()
        _, other_auth = await service.new_tenant()
        mailbox = await service.mailboxes.RegisterMailbox(sa_request(sim, "wired@example.com"), metadata=auth)

        tenant_wide = await service.mailboxes.SendTestEvent(
            mailbox_service_pb2.SendTestEventRequest(note="hello consumer"), metadata=auth
        )
        assert tenant_wide.type == resources_pb2.EVENT_TYPE_TEST
        assert tenant_wide.mailbox_id == "" and tenant_wide.attributes["note"] == "hello consumer"
        for_mailbox = await service.mailboxes.SendTestEvent(
            mailbox_service_pb2.SendTestEventRequest(mailbox_id=mailbox.id), metadata=auth
        )
        assert (for_mailbox.mailbox_id, for_mailbox.email_address) == (mailbox.id, "wired@example.com")

        events = await collect(service, auth, lambda ev: types(ev).count("TEST") >= 2)
        assert [e.id for e in events if types([e]) == ["TEST"]] == [tenant_wide.id, for_mailbox.id]
        # Resuming after the returned cursor skips it: it is a real position in the stream.
        after = await collect(service, auth, lambda ev: "TEST" in types(ev), cursor=tenant_wide.cursor)
        assert [e.id for e in after if types([e]) == ["TEST"]] == [for_mailbox.id]
        # A mailbox filter excludes tenant-wide test events.
        filtered = await collect(service, auth, lambda ev: "TEST" in types(ev), mailbox_ids=[mailbox.id])
        assert [e.id for e in filtered if types([e]) == ["TEST"]] == [for_mailbox.id]

        # Another tenant can neither target this mailbox nor see these events.
        with pytest.raises(grpc.aio.AioRpcError) as foreign:
            await service.mailboxes.SendTestEvent(
                mailbox_service_pb2.SendTestEventRequest(mailbox_id=mailbox.id), metadata=other_auth
            )
        assert foreign.value.code() is grpc.StatusCode.NOT_FOUND
        own = await service.mailboxes.SendTestEvent(mailbox_service_pb2.SendTestEventRequest(), metadata=other_auth)
        theirs = await collect(service, other_auth, lambda ev: "TEST" in types(ev))
        assert [e.id for e in theirs] == [own.id]

        with pytest.raises(grpc.aio.AioRpcError) as long_note:
            await service.mailboxes.SendTestEvent(
                mailbox_service_pb2.SendTestEventRequest(note="x" * 1001), metadata=auth
            )
        assert long_note.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error_details(long_note.value)[1].field_violations] == ["note"]
