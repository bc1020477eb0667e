"""A mailbox registered under an alias: Gmail is called as "me", notifications name the
primary address, and they reach the mailbox without the fallback poll. Credentials of
another mailbox than the registered address (not its user, not one of its send-as
aliases) are refused."""

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
        if credentials == "service_account":  # impersonates the owner (Google refuses an alias as the subject)
            key = json.dumps(sim.create_service_account_key())
            request.service_account.CopyFrom(mailbox_service_pb2.ServiceAccountCredentials(json_key=key,
                                                                                         subject=PRIMARY))
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
    sim.add_aliases(PRIMARY, [ALIAS])
    _, auth = await service.new_tenant()
    request = sa_request(sim, "bob@example.com")
    request.service_account.subject = PRIMARY  # bob's registration, alice's mailbox
    await refused_as_another_mailbox(service, auth, request)


async def test_an_oauth_grant_of_another_user_is_refused(service):
    """The refresh token is alice's: registered as bob, it would watch alice's mailbox under bob's name."""
    sim = service.sim
    sim.create_mailboxes([PRIMARY, "bob@example.com"])
    sim.add_aliases(PRIMARY, [ALIAS])
    _, auth = await service.new_tenant()
    client = sim.create_oauth_client()
    request = mailbox_service_pb2.RegisterMailboxRequest(
        email_address="bob@example.com", oauth=mailbox_service_pb2.OAuthCredentials(
            client_id=client["clientId"], client_secret=client["clientSecret"],
            refresh_token=sim.issue_refresh_token(client["clientId"], PRIMARY)))
    await refused_as_another_mailbox(service, auth, request)
    # The same grant registered under alice's own alias is hers: accepted.
    request.email_address = ALIAS
    assert (await service.mailboxes.RegisterMailbox(request, metadata=auth)).email_address == ALIAS


async def refused_as_another_mailbox(service, auth, request) -> None:
    sim = service.sim
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.mailboxes.RegisterMailbox(request, metadata=auth)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_details(refused.value)[0]
    assert info.reason == "GMAIL_ADDRESS_MISMATCH" and info.metadata["gmail_address"] == PRIMARY
    assert "send-as" in refused.value.details()
    calls = sim.counters()["calls"]
    assert calls[PRIMARY]["users.settings.sendAs.list"] == 1  # Gmail was asked for the user's aliases
    assert "users.watch" not in calls.get(PRIMARY, {}) and "bob@example.com" not in calls
    listed = await service.mailboxes.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=auth)
    assert not listed.mailboxes
