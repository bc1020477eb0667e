"""google-auth credential objects for a mailbox's stored credential."""

from __future__ import annotations

import hashlib
import json
import threading

import cachetools
import google.auth.credentials
from google.oauth2 import credentials as oauth2_credentials
from google.oauth2 import service_account

from mailwatch.domain.models import Credential, OAuthCredential, ServiceAccountCredential

# readonly covers users.watch, users.stop, history.list, messages.list/get.
GMAIL_SCOPES = ("https://www.googleapis.com/auth/gmail.readonly",)

# Parsing a service account's RSA private key costs ~50 ms of CPU with the GIL
# held (cryptography checks the key on load), and one key usually serves every
# mailbox of a Workspace domain. So each distinct key (+ token URI) is parsed
# once and every mailbox gets a `with_subject` copy, which shares the signer.
_SERVICE_ACCOUNTS: cachetools.LRUCache = cachetools.LRUCache(maxsize=1024)
_SERVICE_ACCOUNTS_LOCK = threading.Lock()


def _service_account(info: dict, token_uri: str) -> service_account.Credentials:
    key = hashlib.sha256(json.dumps([info, token_uri], sort_keys=True, default=str).encode()).hexdigest()
    with _SERVICE_ACCOUNTS_LOCK:
        base = _SERVICE_ACCOUNTS.get(key)
    if base is None:
        base = service_account.Credentials.from_service_account_info(
            {**info, "token_uri": token_uri}, scopes=list(GMAIL_SCOPES)
        )
        with _SERVICE_ACCOUNTS_LOCK:
            _SERVICE_ACCOUNTS[key] = base
    return base


def google_credentials(credential: Credential, *, token_uri: str) -> google.auth.credentials.Credentials:
    """Build refreshable credentials; `token_uri` overrides the key file's so that
    one setting points every mailbox at Google or at the simulator."""
    if isinstance(credential, ServiceAccountCredential):
        # A fresh copy per call (own token), sharing the parsed key.
        return _service_account(credential.info, token_uri).with_subject(credential.subject)
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
