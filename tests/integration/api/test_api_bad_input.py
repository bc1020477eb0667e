"""Every malformed request gets INVALID_ARGUMENT with the offending field named."""

from __future__ import annotations

import json

import grpc
import pytest

from mailwatch.v1 import mailbox_service_pb2
from tests.fixtures.rpc import error_details, sa_request

pytestmark = pytest.mark.integration

SA = mailbox_service_pb2.ServiceAccountCredentials
OAUTH = mailbox_service_pb2.OAuthCredentials


def _oauth(**overrides):
    values = dict(client_id="cid", client_secret="secret", refresh_token="rt")
    values.update(overrides)
    return OAUTH(**values)


REGISTER_CASES = [
    ("missing address", dict(email_address="", oauth=_oauth()), "email_address"),
    ("not an address", dict(email_address="not-an-address", oauth=_oauth()), "email_address"),
    ("address too long", dict(email_address="a" * 250 + "@example.com", oauth=_oauth()), "email_address"),
    ("oauth without client or token", dict(email_address="a@example.com", oauth=mailbox_service_pb2.OAuthCredentials()),
     "oauth.refresh_token"),
    ("empty label id", dict(email_address="a@example.com", label_ids=[""], oauth=_oauth()), "label_ids[0]"),
    ("duplicate label id", dict(email_address="a@example.com", label_ids=["INBOX", "INBOX"], oauth=_oauth()),
     "label_ids[1]"),
    ("too many labels", dict(email_address="a@example.com", label_ids=[f"L{n}" for n in range(101)], oauth=_oauth()),
     "label_ids"),
    ("unknown filter behavior", dict(email_address="a@example.com", label_filter_behavior=7, oauth=_oauth()),
     "label_filter_behavior"),
    ("oauth without client id", dict(email_address="a@example.com", oauth=_oauth(client_id="")), "oauth.client_id"),
    ("oauth without secret", dict(email_address="a@example.com", oauth=_oauth(client_secret="")),
     "oauth.client_secret"),
    ("oauth without refresh token", dict(email_address="a@example.com", oauth=_oauth(refresh_token="")),
     "oauth.refresh_token"),
    ("service account key not JSON", dict(email_address="a@example.com", service_account=SA(json_key="{nope")),
     "service_account.json_key"),
    ("service account key missing fields",
     dict(email_address="a@example.com", service_account=SA(json_key=json.dumps({"type": "service_account"}))),
     "service_account.json_key"),
    ("service account key nested too deeply",
     dict(email_address="a@example.com", service_account=SA(json_key="[" * 30000)), "service_account.json_key"),
    ("service account key that cannot sign",
     dict(email_address="a@example.com", service_account=SA(json_key=json.dumps({
         "type": "service_account", "client_email": "robot@p.iam.gserviceaccount.com",
         "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
         "token_uri": "https://oauth2.googleapis.com/token"}))),
     "service_account.json_key"),
    ("service account bad subject",
     dict(email_address="a@example.com", service_account=SA(json_key="{}", subject="nobody")),
     "service_account.subject"),
]


@pytest.mark.parametrize("name,fields,field", REGISTER_CASES, ids=[c[0] for c in REGISTER_CASES])
async def test_register_rejects(service, name, fields, field):
    _, auth = await service.new_tenant()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.mailboxes.RegisterMailbox(mailbox_service_pb2.RegisterMailboxRequest(**fields), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, bad_request = error_details(caught.value)
    assert bad_request is not None, "INVALID_ARGUMENT must carry BadRequest field violations"
    assert field in [v.field for v in bad_request.field_violations]
    assert service.sim.counters()["totalCalls"] == 0, "nothing reaches Gmail for a bad request"


@pytest.mark.parametrize("label_id", ["Label_424242", "Étiquette", "收件箱"])
async def test_a_label_gmail_refuses_is_invalid_argument_on_label_ids(service, label_id):
    """Gmail answers users.watch 400 "Invalid label: <id>" for a label the mailbox lacks."""
    _, auth = await service.new_tenant()
    request = sa_request(service.sim, "labels@example.com", label_ids=["INBOX", label_id])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.mailboxes.RegisterMailbox(request, metadata=auth)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, bad_request = error_details(caught.value)
    assert info.reason == "GMAIL_LABEL_REJECTED"
    assert bad_request is not None, "INVALID_ARGUMENT must carry BadRequest field violations"
    assert [v.field for v in bad_request.field_violations] == ["label_ids"]
    assert label_id in bad_request.field_violations[0].description
    assert service.sim.counters()["calls"]["labels@example.com"]["users.watch"] == 1
    assert "watch" not in service.sim.mailbox("labels@example.com") or not service.sim.mailbox("labels@example.com")["watch"]


OTHER_CASES = [
    ("GetMailbox", mailbox_service_pb2.GetMailboxRequest(mailbox_id="not-a-uuid"), "mailbox_id"),
    ("GetMailbox", mailbox_service_pb2.GetMailboxRequest(), "mailbox_id"),
    ("StopMailbox", mailbox_service_pb2.StopMailboxRequest(mailbox_id="123"), "mailbox_id"),
    ("ListMailboxes", mailbox_service_pb2.ListMailboxesRequest(page_size=-1), "page_size"),
    ("ListMailboxes", mailbox_service_pb2.ListMailboxesRequest(page_token="garbage!"), "page_token"),
    ("ListMailboxes", mailbox_service_pb2.ListMailboxesRequest(states=[42]), "states[0]"),
    ("SendTestEvent", mailbox_service_pb2.SendTestEventRequest(note="a\x00b"), "note"),
    ("GetAttachment", mailbox_service_pb2.GetAttachmentRequest(message_id="18c2", attachment_id="ANGjdJ"), "mailbox_id"),
    ("GetAttachment", mailbox_service_pb2.GetAttachmentRequest(mailbox_id="00000000-0000-0000-0000-000000000001", attachment_id="ANGjdJ"), "message_id"),
    ("GetAttachment", mailbox_service_pb2.GetAttachmentRequest(mailbox_id="00000000-0000-0000-0000-000000000001", message_id="not hex", attachment_id="ANGjdJ"), "message_id"),
    ("GetAttachment", mailbox_service_pb2.GetAttachmentRequest(mailbox_id="00000000-0000-0000-0000-000000000001", message_id="18c2"), "attachment_id"),
    ("GetAttachment", mailbox_service_pb2.GetAttachmentRequest(mailbox_id="00000000-0000-0000-0000-000000000001", message_id="18c2", attachment_id="a/b+c="), "attachment_id"),
    ("GetAttachment", mailbox_service_pb2.GetAttachmentRequest(mailbox_id="00000000-0000-0000-0000-000000000001", message_id="18c2", attachment_id="A" * 4097), "attachment_id"),
    ("ListMessages", mailbox_service_pb2.ListMessagesRequest(), "mailbox_id"),
    ("ListMessages", mailbox_service_pb2.ListMessagesRequest(mailbox_id="nope"), "mailbox_id"),
    ("ListMessages", mailbox_service_pb2.ListMessagesRequest(mailbox_id="00000000-0000-0000-0000-000000000001", page_size=-1), "page_size"),
    ("ListMessages", mailbox_service_pb2.ListMessagesRequest(mailbox_id="00000000-0000-0000-0000-000000000001", page_token="garbage!"), "page_token"),
    ("ListMessages", mailbox_service_pb2.ListMessagesRequest(mailbox_id="00000000-0000-0000-0000-000000000001", label_ids=["INBOX", ""]), "label_ids[1]"),
    ("ListMessages", mailbox_service_pb2.ListMessagesRequest(mailbox_id="00000000-0000-0000-0000-000000000001", label_ids=["INBOX", "INBOX"]), "label_ids[1]"),
    ("ListMessages", mailbox_service_pb2.ListMessagesRequest(mailbox_id="00000000-0000-0000-0000-000000000001", query="x" * 2001), "query"),
    ("ListMessages", mailbox_service_pb2.ListMessagesRequest(mailbox_id="00000000-0000-0000-0000-000000000001", query="from:a\x00"), "query"),
]


@pytest.mark.parametrize("method,request_,field", OTHER_CASES, ids=[f"{c[0]}-{c[2]}" for c in OTHER_CASES])
async def test_other_rpcs_reject(service, method, request_, field):
    _, auth = await service.new_tenant()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        call = getattr(service.mailboxes, method)(request_, metadata=auth)
        if isinstance(call, grpc.aio.UnaryStreamCall):  # GetAttachment streams its answer
            async for _ in call:
                pass
        else:
            await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, bad_request = error_details(caught.value)
    assert field in [v.field for v in bad_request.field_violations]


STREAM_CASES = [
    (mailbox_service_pb2.StreamChangesRequest(mailbox_ids=["nope"]), "mailbox_ids[0]"),
    (mailbox_service_pb2.StreamChangesRequest(event_types=[99]), "event_types[0]"),
    (mailbox_service_pb2.StreamChangesRequest(cursor=b"\x00garbage"), "cursor"),
    (mailbox_service_pb2.StreamChangesRequest(max_batch_size=-5), "max_batch_size"),
]


@pytest.mark.parametrize("request_,field", STREAM_CASES, ids=[c[1] for c in STREAM_CASES])
async def test_stream_rejects(service, request_, field):
    _, auth = await service.new_tenant()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in service.mailboxes.StreamChanges(request_, metadata=auth):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, bad_request = error_details(caught.value)
    assert field in [v.field for v in bad_request.field_violations]


async def test_unknown_mailbox_is_not_found(service):
    _, auth = await service.new_tenant()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.mailboxes.GetMailbox(
            mailbox_service_pb2.GetMailboxRequest(mailbox_id="00000000-0000-0000-0000-000000000000"), metadata=auth
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
