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

# Parsing a service account's RSA private key costs tens of milliseconds of CPU
# with the GIL held (cryptography checks the key on load), and one key usually serves every
# mailbox of a Workspace domain. So each distinct key (+ token URI) is parsed
# once and every mailbox gets a `with_subject` copy, which shares the signer
# but not the access token. The cache key is a digest of the whole key file,
# private key included: two keys that share public identifiers
# (client_email, private_key_id) never share an entry.
_SERVICE_ACCOUNTS: cachetools.LRUCache = cachetools.LRUCache(maxsize=1024)
_SERVICE_ACCOUNTS_LOCK = threading.Lock()

# Digests of private keys that have signed once: a key is checked at every
# registration, and one key often registers thousands of mailboxes.
_SIGNING_KEYS: cachetools.LRUCache = cachetools.LRUCache(maxsize=4096)
_SIGNING_KEYS_LOCK = threading.Lock()


class UnusableKey(ValueError):
    """A service-account key whose private key cannot be parsed or cannot sign."""


def secret_digest(*parts: object) -> str:
    """A SHA-256 over JSON-encoded parts: a cache key bound to the full secret material."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _service_account(info: dict, token_uri: str) -> service_account.Credentials:
    key = secret_digest(info, token_uri)
    with _SERVICE_ACCOUNTS_LOCK:
        base = _SERVICE_ACCOUNTS.get(key)
    if base is None:
        base = _parse_service_account({**info, "token_uri": token_uri})
        with _SERVICE_ACCOUNTS_LOCK:
            _SERVICE_ACCOUNTS[key] = base
    return base


def _parse_service_account(info: dict) -> service_account.Credentials:
    try:
        return service_account.Credentials.from_service_account_info(info, scopes=list(GMAIL_SCOPES))
    except Exception as exc:  # noqa: BLE001 - the key is untrusted input: any failure means unusable
        # Not quoted: the library's text may echo key material.
        raise UnusableKey("private_key is not a usable PEM-encoded RSA private key") from exc


def check_service_account_key(info: dict) -> None:
    """Raise UnusableKey unless the key's private key parses and signs.

    Done at registration so a broken key is refused there, instead of failing
    every later sync; nothing is sent anywhere (signing is local).
    """
    private_key = info.get("private_key")
    digest = secret_digest(private_key)
    with _SIGNING_KEYS_LOCK:
        if digest in _SIGNING_KEYS:
            return
    credentials = _parse_service_account(info)
    try:
        credentials.signer.sign(b"mailwatch key check")
    except Exception as exc:  # noqa: BLE001 - e.g. a non-RSA key that parsed
        raise UnusableKey("private_key cannot sign with RS256 (an RSA key is required)") from exc
    with _SIGNING_KEYS_LOCK:
        _SIGNING_KEYS[digest] = True


def google_credentials(credential: Credential, *, token_uri: str) -> google.auth.credentials.Credentials:
    """Build refreshable credentials; `token_uri` overrides the key file's so that
    one setting points every mailbox at Google or at the simulator.

    Raises UnusableKey for a service-account key that cannot be loaded."""
    if isinstance(credential, ServiceAccountCredential):
        # A fresh copy per call (own token), sharing the parsed key.
        return _service_account(credential.info, token_uri).with_subject(credential.subject)
    if isinstance(credential, OAuthCredential):
        # No scopes: a refresh that names scopes asks for exactly those, and Google
        # answers invalid_scope when the user granted others (e.g. gmail.modify or
        # mail.google.com without gmail.readonly). Unnamed, the new access token
        # carries whatever the refresh token was granted.
        return oauth2_credentials.Credentials(
            token=None,
            refresh_token=credential.refresh_token,
            client_id=credential.client_id,
            client_secret=credential.client_secret,
            token_uri=token_uri,
        )
    raise TypeError(f"unsupported credential type {type(credential).__name__}")
