"""Encryption at rest of Google credentials.

Credentials are serialised to a small versioned JSON document and sealed with
Fernet (AES-128-CBC + HMAC-SHA256, with a timestamp). `SecretBox` wraps a
`MultiFernet`: the first key encrypts, every key decrypts, so an operator
rotates by prepending a new key, re-encrypting (`SecretBox.rotate`), then
dropping the old one.

Nothing in this module puts key material or plaintext in an exception message
or a repr.

Decrypting is a Fernet HMAC + AES pass and a JSON parse per call, and a sync
does it for every claim (its share of the CPU per notification is in
docs/performance.md), so decrypted credentials are kept in a small cache keyed by (tenant,
SHA-256 of the ciphertext): bounded in size and time (`CACHE_SIZE`,
`CACHE_SECONDS`), so plaintext credentials do not stay in memory indefinitely
after their mailbox stops being synced. A new ciphertext (re-registration,
rotation) is a new key; a failure is never cached.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import threading
import time
import uuid
from typing import Callable, Sequence

import cachetools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from mailwatch.domain.errors import CredentialUndecryptable, SecretsNotConfigured
from mailwatch.domain.models import (
    Credential,
    CredentialKind,
    OAuthCredential,
    ServiceAccountCredential,
)

_FORMAT_VERSION = 1


def generate_key() -> str:
    """A fresh Fernet key (urlsafe base64 of 32 random bytes), as MAILWATCH_SECRET_KEYS wants it."""
    return Fernet.generate_key().decode("ascii")


def credential_kind(credential: Credential) -> CredentialKind:
    if isinstance(credential, ServiceAccountCredential):
        return CredentialKind.SERVICE_ACCOUNT
    if isinstance(credential, OAuthCredential):
        return CredentialKind.OAUTH
    raise TypeError(f"not a credential: {type(credential).__name__}")


CACHE_SIZE = 4096  # decrypted credentials kept (each a few kB: a service-account key)
CACHE_SECONDS = 600.0  # how long one is kept after it was decrypted


class SecretBox:
    """Encrypts and decrypts credentials with the configured Fernet keys."""

    def __init__(self, keys: Sequence[str], *, cache_size: int = CACHE_SIZE, cache_seconds: float = CACHE_SECONDS,
                 timer: Callable[[], float] = time.monotonic) -> None:
        if isinstance(keys, (str, bytes)):
            # A single comma-separated string is a common slip; never iterate its characters.
            keys = [k for k in (keys.decode() if isinstance(keys, bytes) else keys).split(",")]
        cleaned = [k.strip() for k in keys if k and k.strip()]
        if not cleaned:
            raise SecretsNotConfigured(
                "no encryption key configured: set MAILWATCH_SECRET_KEYS to one or more comma-separated Fernet keys"
            )
        fernets = []
        for position, key in enumerate(cleaned, start=1):
            try:
                fernets.append(Fernet(key))
            except (ValueError, binascii.Error):
                # The key itself must not appear in the message.
                raise SecretsNotConfigured(
                    f"encryption key #{position} is not a valid Fernet key (urlsafe base64 of 32 bytes)"
                ) from None
        self._fernet = MultiFernet(fernets)
        self._key_count = len(fernets)
        self._decrypted: cachetools.TTLCache = cachetools.TTLCache(maxsize=cache_size, ttl=cache_seconds, timer=timer)
        self._cache_lock = threading.Lock()  # registration decrypts on worker threads too

    def __repr__(self) -> str:
        return f"SecretBox(<{self._key_count} key(s)>)"

    def encrypt_credential(self, credential: Credential) -> bytes:
        kind = credential_kind(credential)
        if kind is CredentialKind.SERVICE_ACCOUNT:
            body = {"info": credential.info, "subject": credential.subject}
        else:
            body = {
                "client_id": credential.client_id,
                "client_secret": credential.client_secret,
                "refresh_token": credential.refresh_token,
            }
        document = {"v": _FORMAT_VERSION, "kind": kind.value, **body}
        return self._fernet.encrypt(json.dumps(document, separators=(",", ":")).encode("utf-8"))

    def decrypt_credential(self, ciphertext: bytes, *, tenant_id: uuid.UUID | None = None) -> Credential:
        """The credential sealed in `ciphertext` (cached per tenant and ciphertext, see the module)."""
        ciphertext = bytes(ciphertext) if isinstance(ciphertext, (bytes, bytearray, memoryview)) else ciphertext
        key = None
        if isinstance(ciphertext, bytes):
            key = (tenant_id, hashlib.sha256(ciphertext).digest())
            with self._cache_lock:
                cached = self._decrypted.get(key)
            if cached is not None:
                return cached
        credential = self._decrypt(ciphertext)
        if key is not None:
            with self._cache_lock:
                self._decrypted[key] = credential
        return credential

    def _decrypt(self, ciphertext: bytes) -> Credential:
        try:
            plaintext = self._fernet.decrypt(bytes(ciphertext))
        except (InvalidToken, TypeError):
            raise CredentialUndecryptable(
                "stored credential cannot be decrypted with any configured key"
            ) from None
        try:
            document = json.loads(plaintext)
            if document.get("v") != _FORMAT_VERSION:
                raise ValueError("unknown format version")
            kind = CredentialKind(document["kind"])
            if kind is CredentialKind.SERVICE_ACCOUNT:
                return ServiceAccountCredential(info=dict(document["info"]), subject=str(document["subject"]))
            return OAuthCredential(
                client_id=str(document["client_id"]),
                client_secret=str(document["client_secret"]),
                refresh_token=str(document["refresh_token"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            # The decoded document may hold secrets: report only that it is malformed.
            raise CredentialUndecryptable("stored credential is malformed") from None

    def rotate(self, ciphertext: bytes) -> bytes:
        """Re-encrypt under the first (current) key, keeping the original timestamp."""
        try:
            return self._fernet.rotate(bytes(ciphertext))
        except (InvalidToken, TypeError):
            raise CredentialUndecryptable(
                "stored credential cannot be decrypted with any configured key"
            ) from None
