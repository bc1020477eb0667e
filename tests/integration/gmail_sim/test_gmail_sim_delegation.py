"""The token endpoint refuses as Google's does: domain-wide delegation per domain and scope,
no impersonating an alias, deleted and unknown OAuth clients, wrong secrets, policy refusals.
Through google-auth, as mailwatch meets them."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from google.auth.exceptions import RefreshError
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

from mailwatch_devstack.gmail_sim import SimulatorControlError
from tests.integration.gmail_sim.support import ALICE, BOB, METADATA, READONLY

pytestmark = pytest.mark.integration

CAROL = "carol@other.test"
UNAUTHORIZED = {"error": "unauthorized_client",
                "error_description": "Client is unauthorized to retrieve access tokens using this method, or client "
                                     "not authorized for any of the scopes requested."}


@pytest.fixture
def mailboxes(control):
    control.create_mailboxes([ALICE, BOB, CAROL])


def profile(gmail, key: dict, subject: str, scopes=(READONLY,)) -> dict:
    creds = service_account.Credentials.from_service_account_info(key, scopes=list(scopes), subject=subject)
    return gmail.service(creds).users().getProfile(userId="me").execute()


def refused(gmail, key: dict, subject: str, scopes=(READONLY,)) -> RefreshError:
    with pytest.raises(RefreshError) as caught:
        profile(gmail, key, subject, scopes)
    assert caught.value.retryable is False
    return caught.value


def test_a_key_without_a_grant_impersonates_nobody(control, gmail, mailboxes):
    key = control.create_service_account_key()
    assert refused(gmail, key, ALICE).args[1] == UNAUTHORIZED
    assert control.counters()["calls"].get(ALICE, {}).get("users.getProfile", 0) == 0


def test_a_grant_covers_its_domain_and_its_scopes_only(control, gmail, mailboxes):
    key = control.create_service_account_key()
    control.grant_delegation("Example.com", key["client_id"], scopes=[READONLY])
    assert control.delegations("example.com") == {key["client_id"]: [READONLY]}
    assert profile(gmail, key, ALICE)["emailAddress"] == ALICE
    assert profile(gmail, key, BOB)["emailAddress"] == BOB  # every user of the granting domain
    assert refused(gmail, key, CAROL).args[1] == UNAUTHORIZED  # not another domain's
    # A requested scope outside the grant: refused, even alongside a granted one.
    assert refused(gmail, key, ALICE, scopes=(READONLY, METADATA)).args[1] == UNAUTHORIZED
    # Another key of the same project has no grant of its own.
    assert refused(gmail, control.create_service_account_key(), ALICE).args[1] == UNAUTHORIZED
    # Taking the grant back stops new tokens.
    control.revoke_delegation("example.com", key["client_id"])
    assert refused(gmail, key, BOB).args[1] == UNAUTHORIZED


def test_impersonating_an_alias_is_refused(control, gmail, mailboxes):
    control.add_aliases(ALICE, ["sales@example.com"])
    key = control.create_service_account_key(delegate_domains=["example.com"])
    error = refused(gmail, key, "sales@example.com")
    assert error.args[1] == {"error": "invalid_request", "error_description": "Invalid impersonation prn email address."}
    assert profile(gmail, key, ALICE)["emailAddress"] == ALICE  # the primary address works


def _refresh_credentials(control, client: dict, email: str, **overrides):
    return user_credentials.Credentials(**{
        "token": None, "refresh_token": control.issue_refresh_token(client["clientId"], email),
        "client_id": client["clientId"], "client_secret": client["clientSecret"], "token_uri": control.token_uri,
        **overrides})


def _token_status(control, form: dict) -> tuple[int, dict]:
    request = urllib.request.Request(control.token_uri, data=urllib.parse.urlencode(form).encode())
    with pytest.raises(urllib.error.HTTPError) as failure:
        urllib.request.urlopen(request, timeout=10)
    with failure.value as response:
        return failure.value.code, json.loads(response.read())


def test_deleted_unknown_and_wrongly_authenticated_oauth_clients(control, gmail, mailboxes):
    client = control.create_oauth_client()
    creds = _refresh_credentials(control, client, ALICE)
    form = {"grant_type": "refresh_token", "refresh_token": creds.refresh_token,
            "client_id": client["clientId"], "client_secret": client["clientSecret"]}
    assert _token_status(control, {**form, "client_secret": "GOCSPX-wrong"}) == (
        401, {"error": "invalid_client", "error_description": "Unauthorized"})
    assert _token_status(control, {**form, "client_id": "1-unknown.apps.googleusercontent.com"}) == (
        401, {"error": "invalid_client", "error_description": "The OAuth client was not found."})

    control.delete_oauth_client(client["clientId"])
    assert _token_status(control, form) == (401, {"error": "deleted_client",
                                                  "error_description": "The OAuth client was deleted."})
    with pytest.raises(RefreshError) as deleted:
        gmail.service(creds).users().getProfile(userId="me").execute()
    assert deleted.value.args[1]["error"] == "deleted_client" and deleted.value.retryable is False
    # Restored within Google's 30 days, its refresh tokens work again.
    control.delete_oauth_client(client["clientId"], restore=True)
    assert gmail.service(creds).users().getProfile(userId="me").execute()["emailAddress"] == ALICE
    with pytest.raises(SimulatorControlError) as unknown:
        control.delete_oauth_client("nope")
    assert unknown.value.status == 404


@pytest.mark.parametrize("kind, error, jwt_too", [
    ("adminPolicyEnforced", "admin_policy_enforced", True),
    ("policyEnforced", "policy_enforced", False),  # Advanced Protection: apps a user consented to
])
def test_policy_refusals(control, gmail, mailboxes, kind, error, jwt_too):
    control.refuse_user(ALICE, kind)
    with pytest.raises(RefreshError) as caught:
        gmail.service(gmail.user_credentials(ALICE)).users().getProfile(userId="me").execute()
    assert caught.value.args[1]["error"] == error and caught.value.retryable is False
    assert "unable to authorize one or more scopes" in caught.value.args[1]["error_description"]
    if jwt_too:
        key = control.create_service_account_key(delegate_domains=["example.com"])
        assert refused(gmail, key, ALICE).args[1]["error"] == error
    else:
        assert gmail.for_user(ALICE).users().getProfile(userId="me").execute()["emailAddress"] == ALICE
    gmail.service(gmail.user_credentials(BOB)).users().getProfile(userId="me").execute()  # others unaffected


def test_grants_need_a_client_id_and_scopes(control):
    for body in ({"scopes": [READONLY]}, {"clientId": "123", "scopes": []}, {"clientId": "123", "scopes": "x"}):
        with pytest.raises(SimulatorControlError) as rejected:
            control._call("POST", "/_sim/domains/example.com/delegations", body)
        assert rejected.value.status == 400
