"""Credentials as Google's: both google-auth credential models, refresh, denial, revocation, expiry."""

from __future__ import annotations

import datetime
import json

import google_auth_httplib2
import httplib2
import pytest
from google.auth.exceptions import RefreshError
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from tests.integration.gmail_sim.support import ALICE, BOB, READONLY

pytestmark = pytest.mark.integration


@pytest.fixture
def mailboxes(control):
    control.create_mailboxes([ALICE, BOB])


def tokens_issued(control, email):
    return control.counters()["calls"].get(email, {}).get("oauth2.token", 0)


def test_service_account_domain_wide_delegation(control, gmail, mailboxes):
    key = control.create_service_account_key(project_id="acme", delegate_domains=["example.com"])
    assert key["type"] == "service_account" and key["token_uri"] == control.token_uri
    assert key["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    creds = service_account.Credentials.from_service_account_info(key, scopes=[READONLY], subject=ALICE)
    service = gmail.service(creds)
    assert service.users().getProfile(userId="me").execute()["emailAddress"] == ALICE
    assert creds.token.startswith("ya29.") and creds.valid
    # The same key impersonates any user of the domain.
    bob = gmail.service(creds.with_subject(BOB))
    assert bob.users().getProfile(userId=BOB).execute()["emailAddress"] == BOB
    assert tokens_issued(control, ALICE) == 1 and tokens_issued(control, BOB) == 1


def test_per_user_oauth_refresh_token(control, gmail, mailboxes):
    creds = gmail.user_credentials(BOB)
    service = gmail.service(creds)
    assert service.users().getProfile(userId="me").execute()["emailAddress"] == BOB
    assert creds.token and creds.expiry is not None


def test_token_for_one_user_cannot_read_another(gmail, mailboxes):
    alice = gmail.service(gmail.user_credentials(ALICE))
    with pytest.raises(HttpError) as denied:
        alice.users().messages().list(userId=BOB).execute()
    assert denied.value.resp.status == 403
    error = json.loads(denied.value.content)["error"]
    assert error["message"] == f"Delegation denied for {ALICE}" and error["status"] == "PERMISSION_DENIED"
    assert alice.users().messages().list(userId=ALICE).execute()["resultSizeEstimate"] == 0


def test_signature_from_another_key_is_invalid_grant(control, gmail, mailboxes):
    real = control.create_service_account_key()
    other = control.create_service_account_key()
    forged = dict(real, private_key=other["private_key"], private_key_id=real["private_key_id"])
    creds = service_account.Credentials.from_service_account_info(forged, scopes=[READONLY], subject=ALICE)
    with pytest.raises(RefreshError) as refused:
        gmail.service(creds).users().getProfile(userId="me").execute()
    assert "invalid_grant" in str(refused.value) and "Invalid JWT Signature" in str(refused.value)


def test_unknown_subject_is_invalid_grant(gmail, mailboxes):
    creds = gmail.sa_credentials("nobody@example.com")
    with pytest.raises(RefreshError) as refused:
        gmail.service(creds).users().getProfile(userId="me").execute()
    assert refused.value.args[1] == {"error": "invalid_grant", "error_description": "Invalid email or User ID"}


def test_scope_outside_delegation_is_unauthorized_client(control, gmail, mailboxes):
    key = control.create_service_account_key(delegate_domains=["example.com"], scopes=[READONLY])
    creds = service_account.Credentials.from_service_account_info(
        key, scopes=["https://mail.google.com/"], subject=ALICE)
    with pytest.raises(RefreshError) as refused:
        gmail.service(creds).users().getProfile(userId="me").execute()
    assert refused.value.args[1]["error"] == "unauthorized_client"


def test_wrong_client_secret_is_invalid_client(control, gmail, mailboxes):
    client = control.create_oauth_client()
    refresh = control.issue_refresh_token(client["clientId"], ALICE)
    creds = user_credentials.Credentials(token=None, refresh_token=refresh, client_id=client["clientId"],
                                         client_secret="wrong", token_uri=control.token_uri)
    with pytest.raises(RefreshError) as refused:
        gmail.service(creds).users().getProfile(userId="me").execute()
    assert refused.value.args[1]["error"] == "invalid_client"


def _no_refresh_service(gmail, token: str):
    """A service that presents `token` and surfaces 401 instead of refreshing on it."""
    creds = user_credentials.Credentials(token=token)
    http = google_auth_httplib2.AuthorizedHttp(creds, http=httplib2.Http(), refresh_status_codes=())
    service = build("gmail", "v1", static_discovery=True, http=http,
                    client_options={"api_endpoint": gmail.url})
    gmail._stack.callback(service.close)
    return service


@pytest.mark.parametrize("model", ["service_account", "oauth"])
def test_revocation_invalid_grant_and_401_then_restore(control, gmail, mailboxes, model):
    creds = gmail.sa_credentials(ALICE) if model == "service_account" else gmail.user_credentials(ALICE)
    service = gmail.service(creds)
    service.users().getProfile(userId="me").execute()
    issued = creds.token
    control.revoke_user(ALICE)
    # The already-issued access token now answers 401 ...
    with pytest.raises(HttpError) as unauthorized:
        _no_refresh_service(gmail, issued).users().getProfile(userId="me").execute()
    assert unauthorized.value.resp.status == 401
    assert "invalid_token" in unauthorized.value.resp["www-authenticate"]
    error = json.loads(unauthorized.value.content)["error"]
    assert error["status"] == "UNAUTHENTICATED" and error["errors"][0]["reason"] == "authError"
    # ... and google-auth's refresh on that 401 gets invalid_grant (HTTP 400) from the token endpoint.
    with pytest.raises(RefreshError) as refused:
        service.users().getProfile(userId="me").execute()
    assert refused.value.args[1]["error"] == "invalid_grant"
    assert refused.value.retryable is False
    control.restore_user(ALICE)
    assert service.users().getProfile(userId="me").execute()["emailAddress"] == ALICE


def test_invalid_grant_body_from_token_endpoint(control, mailboxes):
    import urllib.error
    import urllib.parse
    import urllib.request

    client = control.create_oauth_client()
    refresh = control.issue_refresh_token(client["clientId"], ALICE)
    control.revoke_user(ALICE)
    form = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": refresh,
                                   "client_id": client["clientId"], "client_secret": client["clientSecret"]})
    with pytest.raises(urllib.error.HTTPError) as failure:
        urllib.request.urlopen(urllib.request.Request(control.token_uri, data=form.encode()), timeout=10)
    with failure.value as response:
        assert failure.value.code == 400
        assert json.loads(response.read()) == {"error": "invalid_grant",
                                               "error_description": "Token has been expired or revoked."}


def test_access_tokens_expire_on_the_sim_clock_and_refresh(control, gmail, mailboxes):
    creds = gmail.sa_credentials(ALICE)
    service = gmail.service(creds)
    service.users().getProfile(userId="me").execute()
    first = creds.token
    control.advance_clock(3601)
    with pytest.raises(HttpError) as expired:
        _no_refresh_service(gmail, first).users().getProfile(userId="me").execute()
    assert expired.value.resp.status == 401
    # google-auth still believes its token is fresh (real clock); the 401 makes it refresh once.
    assert service.users().getProfile(userId="me").execute()["emailAddress"] == ALICE
    assert creds.token != first and tokens_issued(control, ALICE) == 2


def test_token_lifetime_is_configurable(control, gmail, mailboxes):
    control.configure(token_lifetime_seconds=120)
    creds = gmail.user_credentials(ALICE)
    gmail.service(creds).users().getProfile(userId="me").execute()
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)  # google-auth: naive UTC
    assert 0 < (creds.expiry - now).total_seconds() <= 120


def test_missing_and_unknown_bearer_tokens(gmail, mailboxes):
    with pytest.raises(HttpError) as unknown:
        _no_refresh_service(gmail, "ya29.not-issued").users().getProfile(userId="me").execute()
    assert unknown.value.resp.status == 401


def test_metadata_scope_limits_formats(control, gmail, mailboxes):
    message = control.insert_message(ALICE)
    metadata = "https://www.googleapis.com/auth/gmail.metadata"
    service = gmail.service(gmail.user_credentials(ALICE, scopes=[metadata]))
    assert service.users().messages().get(userId="me", id=message["id"], format="metadata").execute()["id"]
    with pytest.raises(HttpError) as refused:
        service.users().messages().get(userId="me", id=message["id"], format="full").execute()
    assert refused.value.resp.status == 403


def test_token_without_gmail_scope_is_insufficient(control, gmail, mailboxes):
    service = gmail.service(gmail.user_credentials(ALICE, scopes=["openid"]))
    with pytest.raises(HttpError) as refused:
        service.users().getProfile(userId="me").execute()
    assert refused.value.resp.status == 403
    assert json.loads(refused.value.content)["error"]["errors"][0]["reason"] == "insufficientPermissions"
