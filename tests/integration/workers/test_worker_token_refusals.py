"""The token endpoint's final refusals, against the simulator: at registration a clear
FAILED_PRECONDITION naming Google's error (never UNAVAILABLE, which tells a client to retry
for ever); for a registered mailbox one terminal state and one event carrying Google's error,
then no more Gmail calls."""

from __future__ import annotations

import grpc
import pytest

from mailwatch.v1 import mailbox_service_pb2, resources_pb2
from tests.fixtures.factory import service_account_request
from tests.fixtures.names import TEST_PROJECT
from tests.fixtures.pipeline import claims_one, collect, eventually, get_mailbox as get, types
from tests.fixtures.rpc import error_details, oauth_request

pytestmark = pytest.mark.integration


def _wrong_secret(sim, email):
    request, _, _ = oauth_request(sim, email)
    request.oauth.client_secret = "GOCSPX-not-the-secret"
    return request


def _deleted_client(sim, email):
    request, client, _ = oauth_request(sim, email)
    sim.delete_oauth_client(client["clientId"])
    return request


def _unknown_client(sim, email):
    request, _, _ = oauth_request(sim, email)
    request.oauth.client_id = "404-unknown.apps.googleusercontent.com"
    return request


def _admin_policy(sim, email):
    request, _, _ = oauth_request(sim, email)
    sim.refuse_user(email, "adminPolicyEnforced")
    return request


def _advanced_protection(sim, email):
    request, _, _ = oauth_request(sim, email)
    sim.refuse_user(email, "policyEnforced")
    return request


def _undelegated_key(sim, email):
    sim.create_mailbox(email)
    key = sim.create_service_account_key(project_id=TEST_PROJECT, delegate_domains=())  # no domain granted it
    return service_account_request(email, key)


def _alias_subject(sim, email):
    sim.create_mailbox("owner@example.com")
    sim.add_aliases("owner@example.com", [email])
    # The key impersonates the alias (the registered address): Google only impersonates primary addresses.
    return service_account_request(email, sim.create_service_account_key(project_id=TEST_PROJECT))


@pytest.mark.parametrize("make_request, reason, oauth_error", [
    (_wrong_secret, "GMAIL_AUTH_FAILED", "invalid_client"),
    (_unknown_client, "GMAIL_AUTH_FAILED", "invalid_client"),
    (_deleted_client, "GMAIL_AUTH_FAILED", "deleted_client"),
    (_undelegated_key, "GMAIL_AUTH_FAILED", "unauthorized_client"),
    (_alias_subject, "GMAIL_AUTH_FAILED", "invalid_request"),
    (_admin_policy, "GMAIL_ACCESS_REFUSED", "admin_policy_enforced"),
    (_advanced_protection, "GMAIL_ACCESS_REFUSED", "policy_enforced"),
])
async def test_registration_is_refused_with_googles_error(service, make_request, reason, oauth_error):
    _, auth = await service.new_tenant()
    email = "refused@example.com"
    request = make_request(service.sim, email)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await service.mailboxes.RegisterMailbox(request, metadata=auth)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_details(refused.value)[0]
    assert info.reason == reason and info.metadata["oauth_error"] == oauth_error
    assert oauth_error in refused.value.details()
    # Gmail itself was never called: the token endpoint said no first.
    assert not service.sim.counters()["calls"].get(email, {}).keys() - {"oauth2.token"}


@pytest.mark.parametrize("refuse, state, event, oauth_error", [
    (lambda sim, email, client: sim.delete_oauth_client(client["clientId"]),
     resources_pb2.MAILBOX_STATE_AUTH_FAILED, "AUTH_FAILED", "deleted_client"),
    (lambda sim, email, client: sim.refuse_user(email, "adminPolicyEnforced"),
     resources_pb2.MAILBOX_STATE_ACCESS_REFUSED, "ACCESS_REFUSED", "admin_policy_enforced"),
    (lambda sim, email, client: sim.refuse_user(email, "policyEnforced"),
     resources_pb2.MAILBOX_STATE_ACCESS_REFUSED, "ACCESS_REFUSED", "policy_enforced"),
])
async def test_a_registered_mailbox_ends_in_one_terminal_event(make_service, refuse, state, event, oauth_error):
    async with make_service(sync_enabled=False, poll_enabled=False) as service:
        sim = service.sim
        email = "later@example.com"
        sim.configure(token_lifetime_seconds=1)  # every call needs a fresh token
        _, auth = await service.new_tenant()
        request, client, _ = oauth_request(sim, email)
        mailbox = await service.mailboxes.RegisterMailbox(request, metadata=auth)
        sim.advance_clock(2)  # the access token has expired; past the watch notification's 1/s window
        refuse(sim, email, client)
        marked = service.app.ingestor.stats.marked_due
        sim.insert_message(email, label_ids=["INBOX"])
        await eventually(lambda: service.app.ingestor.stats.marked_due > marked)
        await claims_one(service.app.sync_worker)

        failed = await get(service, auth, mailbox.id)
        assert failed.state == state and not failed.HasField("next_attempt_time")
        assert oauth_error in failed.last_error.message
        events = await collect(service, auth, lambda ev: event in types(ev))
        [terminal] = [e for e in events if types([e]) == [event]]
        assert terminal.attributes["oauth_error"] == oauth_error
        # Final: another notification and a sync attempt make no Gmail call, and no second event.
        before = dict(sim.counters()["calls"].get(email, {}))
        sim.insert_message(email, label_ids=["INBOX"])
        assert await service.app.sync_worker.run_once() == 0
        assert dict(sim.counters()["calls"].get(email, {})) == before
        # A TEST event after it all: every event before it is in the stream by then.
        await service.mailboxes.SendTestEvent(mailbox_service_pb2.SendTestEventRequest(), metadata=auth)
        events = await collect(service, auth, lambda ev: "TEST" in types(ev))
        assert types(events).count(event) == 1
