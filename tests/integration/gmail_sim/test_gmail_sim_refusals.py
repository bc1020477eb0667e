"""Permanent refusals injected per user, at the API and at the token endpoint — through the real clients."""

from __future__ import annotations

import json

import pytest
from google.auth.exceptions import RefreshError
from googleapiclient.errors import HttpError

from tests.integration.gmail_sim.support import ALICE, BOB

pytestmark = pytest.mark.integration

CLOCK_SKEW = ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
              "Check your iat and exp values in the JWT claim.")


@pytest.fixture
def mailboxes(control):
    control.create_mailboxes([ALICE, BOB])


@pytest.mark.parametrize("kind, status, reason, message", [
    ("delegationDenied", 403, "forbidden", f"Delegation denied for {ALICE}"),
    ("domainPolicy", 403, "domainPolicy", "The domain administrators have disabled Gmail apps."),
    ("insufficientPermissions", 403, "insufficientPermissions", "Request had insufficient authentication scopes."),
    ("mailServiceNotEnabled", 400, "failedPrecondition", "Mail service not enabled"),
])
def test_api_refusals_answer_every_call_of_the_user(control, gmail, mailboxes, kind, status, reason, message):
    alice = gmail.for_user(ALICE)
    alice.users().getProfile(userId="me").execute()
    control.refuse_user(ALICE, kind)
    for call in (alice.users().getProfile(userId="me"),
                 alice.users().watch(userId="me", body={"topicName": "projects/sim-project/topics/t"})):
        with pytest.raises(HttpError) as refused:
            call.execute()
        assert refused.value.resp.status == status
        error = json.loads(refused.value.content)["error"]
        assert error["message"] == message and error["errors"][0]["reason"] == reason
    assert control.counters()["calls"][ALICE]["users.watch"] == 1  # refused calls are counted
    assert control.faults()["refusals"] == {ALICE: kind}
    gmail.for_user(BOB).users().getProfile(userId="me").execute()  # other users unaffected
    control.lift_refusal(ALICE)
    assert alice.users().getProfile(userId="me").execute()["emailAddress"] == ALICE


def test_clock_skew_is_invalid_grant_with_the_iat_exp_text(control, gmail, mailboxes):
    control.refuse_user(ALICE, "clockSkew")
    with pytest.raises(RefreshError) as refused:
        gmail.for_user(ALICE).users().getProfile(userId="me").execute()
    assert refused.value.args[1] == {"error": "invalid_grant", "error_description": CLOCK_SKEW}
    # A revoked grant is invalid_grant too, with another text: the caller must tell them apart.
    control.lift_refusal(ALICE)
    control.revoke_user(BOB)
    with pytest.raises(RefreshError) as revoked:
        gmail.for_user(BOB).users().getProfile(userId="me").execute()
    assert revoked.value.args[1]["error"] == "invalid_grant"
    assert revoked.value.args[1]["error_description"] != CLOCK_SKEW
    assert gmail.for_user(ALICE).users().getProfile(userId="me").execute()["emailAddress"] == ALICE


def test_clock_skew_applies_to_jwt_grants_only(control, gmail, mailboxes):
    control.refuse_user(ALICE, "clockSkew")
    service = gmail.service(gmail.user_credentials(ALICE))  # a refresh-token grant carries no iat/exp
    assert service.users().getProfile(userId="me").execute()["emailAddress"] == ALICE


@pytest.mark.parametrize("model", ["service_account", "oauth"])
def test_unauthorized_client(control, gmail, mailboxes, model):
    control.refuse_user(ALICE, "unauthorizedClient")
    creds = gmail.sa_credentials(ALICE) if model == "service_account" else gmail.user_credentials(ALICE)
    with pytest.raises(RefreshError) as refused:
        gmail.service(creds).users().getProfile(userId="me").execute()
    assert refused.value.args[1]["error"] == "unauthorized_client"
    assert refused.value.retryable is False


def test_unknown_refusal_is_rejected(control, mailboxes):
    from mailwatch_devstack.gmail_sim import SimulatorControlError

    with pytest.raises(SimulatorControlError) as rejected:
        control.refuse_user(ALICE, "sometimes")
    assert rejected.value.status == 400
