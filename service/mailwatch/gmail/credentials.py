"""google-auth credential objects for a mailbox's stored credential."""

from __future__ import annotations

import google.auth.credentials
from google.oauth2 import credentials as oauth2_credentials
from google.oauth2 import service_account

from mailwatch.domain.models import Credential, OAuthCredential, ServiceAccountCredential

# readonly covers users.watch, users.stop, history.list, messages.list/get.
GMAIL_SCOPES = ("https://www.googleapis.com/auth/gmail.readonly",)


def google_credentials(credential: Credential, *, token_uri: str) -> google.auth.credentials.Credentials:
    """Build refreshable credentials; `token_uri` overrides the key file's so that
    one setting points every mailbox at Google or at the simulator."""
    if isinstance(credential, ServiceAccountCredential):
        info = {**credential.info, "token_uri": token_uri}
        return service_account.Credentials.from_service_account_info(
            info, scopes=list(GMAIL_SCOPES), subject=credential.subject
        )
    if isinstance(credential, OAuthCredential):
        return oauth2_credentials.Credentials(
            token=None,
            refresh_token=credential.refresh_token,
            client_id=credential.client_id,
            client_secret=credential.client_secret,
            token_uri=token_uri,
            scopes=list(GMAIL_SCOPES),
        )
    raise TypeError(f"unsupported credential type {type(credential).__name__}")
