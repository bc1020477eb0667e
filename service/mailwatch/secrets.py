"""Encryption at rest of Google credentials.

A credential is stored in two parts: the part a tenant's mailboxes share (a
service-account key, or an OAuth client's id and secret) is sealed once per
tenant and key (`SealedSecret`, one `sealed_credentials` row), and what is a
mailbox's own (an OAuth refresh token) is sealed on the mailbox's row; a
service account's impersonated address is not secret. Each part is a small
versioned JSON document (or the token) sealed with Fernet (AES-128-CBC +
HMAC-SHA256, with a timestamp). `SecretBox` wraps a `MultiFernet`: the first
key encrypts, every key decrypts, so an operator rotates by prepending a new
key, re-encrypting (`mailwatch rotate-secrets`, `SecretBox.rotate`), then
dropping the old one.

Fernet seals with a random IV, so two ciphertexts of one key never match: the
shared part's identity is the SHA-256 of its plaintext (`SealedSecret.digest`).
A key is 2048 bits of RSA and a client secret is random, so the digest reveals
nothing but equality, and only within a tenant (rows are per tenant).

Nothing in this module puts key material or plaintext in an exception message
or a repr.

Decrypting is a Fernet HMAC + AES pass and a JSON parse per call, and a sync
does it for every claim (its share of the CPU per notification is in
docs/performance.md), so decrypted parts are kept in a small cache: a shared
part by (tenant, row id, digest), a refresh token by (tenant, SHA-256 of its
ciphertext). Bounded in size and time (`CACHE_SIZE`, `CACHE_SECONDS`), so
plaintext credentials do not stay in memory indefinitely after their mailbox
stops being synced. A new key is a new digest (a new entry); re-encryption
(rotation) leaves the plaintext, and so the entry, as it was; a failure is
never cached.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import json
import threading
import time
import uuid
from typing import Callable, Iterator, Sequence

import cachetools

from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from mailwatch.domain.errors import CredentialUndecryptable, SecretsNotConfigured
from mailwatch.domain.models import (
    Credential,
    CredentialKind,
    OAuthCredential,
    SealedCredential,
    ServiceAccountCredential,
)

# 1: a whole credential per mailbox (before migration 0017); 2: the shared part alone.
_FORMAT_VERSION = 2
_DIGEST_PREFIX = b"mailwatch sealed credential v2\0"


@dataclass(frozen=True)
class SealedSecret:
    """The shared part of a credential, sealed: one `sealed_credentials` row."""

    kind: CredentialKind
    digest: bytes  # SHA-256 of the plaintext document: the same key, the same digest
    ciphertext: bytes = field(repr=False)


def _shared_document(credential: Credential) -> dict:
    kind = credential_kind(credential)
    if kind is CredentialKind.SERVICE_ACCOUNT:
        return {"v": _FORMAT_VERSION, "kind": kind.value, "info": credential.info}
    return {"v": _FORMAT_VERSION, "kind": kind.value, "client_id": credential.client_id,
            "client_secret": credential.client_secret}


def _digest(document: dict) -> bytes:
    return hashlib.sha256(_DIGEST_PREFIX + _canonical(document)).digest()


def shared_digest(credential: Credential) -> bytes:
    """SHA-256 of the credential's shared part (canonical JSON): its identity within a tenant."""
    return _digest(_shared_document(credential))


def _canonical(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")


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

    def seal_shared(self, credential: Credential) -> SealedSecret:
        """Seal the part a tenant's mailboxes share (its digest says which row it is)."""
        document = _shared_document(credential)
        return SealedSecret(kind=credential_kind(credential), digest=_digest(document),
                            ciphertext=self._fernet.encrypt(_canonical(document)))

    def seal_refresh_token(self, credential: Credential) -> bytes | None:
        """Seal what is the mailbox's own secret: an OAuth refresh token (a service account has none)."""
        if isinstance(credential, OAuthCredential):
            return self._fernet.encrypt(credential.refresh_token.encode("utf-8"))
        return None

    def open(self, stored: SealedCredential, *, tenant_id: uuid.UUID | None = None) -> Credential:
        """The credential of a mailbox (or of a tenant's settings, subject and refresh token
        empty); parts cached as the module says."""
        shared = self._cached(("shared", tenant_id, stored.sealed_credential_id, bytes(stored.digest)),
                              lambda: self._open_shared(stored))
        if shared["kind"] == CredentialKind.SERVICE_ACCOUNT.value:
            return ServiceAccountCredential(info=shared["info"], subject=stored.subject)
        token = ""
        if stored.refresh_token_ciphertext is not None:
            ciphertext = bytes(stored.refresh_token_ciphertext)
            token = self._cached(("token", tenant_id, hashlib.sha256(ciphertext).digest()),
                                 lambda: self._open_token(ciphertext))
        return OAuthCredential(client_id=shared["client_id"], client_secret=shared["client_secret"],
                               refresh_token=token)

    def opens(self, stored: SealedCredential, *, tenant_id: uuid.UUID | None = None) -> bool:
        """Whether a configured key opens the stored credential (a stored copy that does not
        is sealed anew when the same key is given again)."""
        try:
            self.open(stored, tenant_id=tenant_id)
        except CredentialUndecryptable:
            return False
        return True

    def _cached(self, key: tuple, load: Callable[[], object]):
        with self._cache_lock:
            found = self._decrypted.get(key)
        if found is not None:
            return found
        value = load()
        with self._cache_lock:
            self._decrypted[key] = value
        return value

    def _open_shared(self, stored: SealedCredential) -> dict:
        plaintext = self._decrypt(stored.ciphertext)
        try:
            document = json.loads(plaintext)
            if document.get("v") != _FORMAT_VERSION:
                raise ValueError("unknown format version")
            kind = CredentialKind(document["kind"])
            if kind is not stored.kind:
                raise ValueError("kind differs from the row's")
            if kind is CredentialKind.SERVICE_ACCOUNT:
                return {"kind": kind.value, "info": dict(document["info"])}
            return {"kind": kind.value, "client_id": str(document["client_id"]),
                    "client_secret": str(document["client_secret"])}
        except (ValueError, KeyError, TypeError, AttributeError):
            # The decoded document may hold secrets: report only that it is malformed.
            raise CredentialUndecryptable("stored credential is malformed") from None

    def _open_token(self, ciphertext: bytes) -> str:
        try:
            return self._decrypt(ciphertext).decode("utf-8")
        except UnicodeDecodeError:
            raise CredentialUndecryptable("stored credential is malformed") from None

    def _decrypt(self, ciphertext: bytes) -> bytes:
        with _undecryptable():
            return self._fernet.decrypt(bytes(ciphertext))

    def rotate(self, ciphertext: bytes) -> bytes:
        """Re-encrypt under the first (current) key, keeping the original timestamp."""
        with _undecryptable():
            return self._fernet.rotate(bytes(ciphertext))


@contextlib.contextmanager
def _undecryptable() -> Iterator[None]:
    """Fernet's refusal as ours, without its message or cause (they may describe the key)."""
    try:
        yield
    except (InvalidToken, TypeError):
        raise CredentialUndecryptable("stored credential cannot be decrypted with any configured key") from None
