"""A mailbox registered under an alias: Gmail is called as "me", notifications name the
primary address, and they reach the mailbox without the fallback poll."""

from __future__ import annotations

import json

import grpc
import pytest

from mailwatch.v1 import mailbox_service_pb2
from tests.fixtures.pipeline import collect, message_events
from tests.fixtures.rpc import error_details, sa_request

pytestmark = pytest.mark.integration

PRIMARY = "alice@example.com"
ALIAS = "sales@example.com"


@pytest.mark.parametrize("credentials", ["service_account", "oauth"])
async def test_registered_under_an_alias_gets_its_notifications(make_service, credentials):
    async with make_service(poll_enabled=False) as service:
        sim = service.sim
        sim.create_mailbox(PRIMARY)
        sim.add_aliases(PRIMARY, [ALIAS])
        _, auth = await service.new_tenant()
        request = mailbox_service_pb2.RegisterMailboxRequest(email_address=ALIAS)
        if credentials == "service_account":  # impersonates the alias: the token is the primary's
            key = json.dumps(sim.create_service_account_key())
            request.service_account.CopyFrom(mailbox_service_pb2.ServiceAccountCredentials(json_key=key))
        else:  # the user consented while signed in under the alias
            client = sim.create_oauth_client()
            request.oauth.CopyFrom(mailbox_service_pb2.OAuthCredentials(
                client_id=client["clientId"], client_secret=client["clientSecret"],
                refresh_token=sim.issue_refresh_token(client["clientId"], ALIAS)))
        mailbox = await service.mailboxes.RegisterMailbox(request, metadata=auth)
        assert mailbox.email_address == ALIAS
        sim.advance_clock(2)
        sim.reset_counters()

        mail = sim.insert_message(ALIAS, label_ids=["INBOX"])
        assert sim.notifications()[-1]["emailAddress"] == PRIMARY
        events = await collect(service, auth, lambda ev: mail["id"] in [e.message_id for e in ev])
        assert message_events(events)[-1] == ("EVENT_TYPE_MESSAGE_ADDED", mail["id"], ("INBOX",))
        assert events[-1].email_address == ALIAS and events[-1].mailbox_id == mailbox.id
        # Every call went to the authorised user's own mailbox ("me"), none was refused.
        calls = sim.counters()["calls"]
        assert set(calls) == {PRIMARY} and calls[PRIMARY]["users.history.list"] >= 1


async def test_a_key_impersonating_another_user_is_refused(service):
    sim = service.sim
    sim.create_mailboxes([PRIMARY, "bob@example.com"])
    _, auth = await service.new_tenant()
    request = sa_request(sim, "bob@example.com")
    request.service_account.subject = PRIMARY  # bob's registration, alice's mailbox
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.mailboxes.RegisterMailbox(request, metadata=auth)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # how GMAIL_PERMISSION_DENIED maps
    assert error_details(refused.value)[0].reason == "GMAIL_PERMISSION_DENIED"
    assert "users.watch" not in sim.counters()["calls"].get(PRIMARY, {})
