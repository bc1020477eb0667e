"""The simulator's OAuth 2.0 authority: keys, clients, grants and bearer tokens.

It answers `POST {url}/token` like Google's token endpoint does for the two
grants mailwatch uses, so unmodified google-auth credentials refresh against it:

* JWT bearer (`urn:ietf:params:oauth:grant-type:jwt-bearer`): a service-account
  assertion signed RS256 with a key this simulator issued, verified with the
  matching public key; `sub` names the impersonated user (domain-wide delegation).
  google-auth always puts Google's own token URL in `aud`; both it and the
  simulator's URL are accepted. `iat`/`exp` are checked against the real clock,
  because the client signs with the real clock. Impersonation needs a
  domain-wide delegation grant: the sub's domain's administrator authorises the
  service account's client id for a set of scopes (`grant_delegation`); without
  one for that domain covering every requested scope, `unauthorized_client`.
  The sub must be a user's primary address: an alias is `invalid_request`.
* refresh token (`refresh_token`): client id + secret + a refresh token issued
  for one user through the control API. An unknown client or a wrong secret is
  `invalid_client`, a deleted client `deleted_client` (HTTP 401 each).

Access tokens expire on the simulator clock. A revoked user gets `invalid_grant`
from the token endpoint and 401 from the API for tokens already issued.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailwatch_devstack.gmail_sim.clock import SimClock
from mailwatch_devstack.gmail_sim.errors import GmailError, OAuthError, insufficient_scopes, unauthenticated
from mailwatch_devstack.gmail_sim.refusals import UNAUTHORIZED_CLIENT_TEXT, Refusals

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
_LEGACY_TOKEN_URIS = ("https://accounts.google.com/o/oauth2/token", "https://www.googleapis.com/oauth2/v4/token")
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"

SCOPE_FULL = "https://mail.google.com/"
SCOPE_MODIFY = "https://www.googleapis.com/auth/gmail.modify"
SCOPE_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
SCOPE_METADATA = "https://www.googleapis.com/auth/gmail.metadata"
GMAIL_READ_SCOPES = frozenset({SCOPE_FULL, SCOPE_MODIFY, SCOPE_READONLY, SCOPE_METADATA})
DEFAULT_SCOPES = (SCOPE_READONLY,)
DEFAULT_PROJECT = "sim-project"
_CLOCK_SKEW = 300


def project_number(project_id: str) -> int:
    """A stable 12-digit number for a project id: Google's errors name the consumer project by number."""
    digest = hashlib.sha256(project_id.encode("utf-8")).digest()
    return 100_000_000_000 + int.from_bytes(digest[:8], "big") % 900_000_000_000


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# Google's token-endpoint answers (error, description, HTTP status).
ALIAS_SUBJECT_TEXT = "Invalid impersonation prn email address."
CLIENT_NOT_FOUND_TEXT = "The OAuth client was not found."
CLIENT_DELETED_TEXT = "The OAuth client was deleted."


@dataclass(slots=True)
class ServiceAccount:
    client_email: str
    client_id: str  # what a Workspace administrator authorises for domain-wide delegation
    key_id: str
    public_key: rsa.RSAPublicKey
    project_id: str


@dataclass(slots=True)
class OAuthClient:
    secret: str
    project_id: str  # the Google project the client was created in
    deleted: bool = False  # deleted in the Cloud console (restorable for 30 days)


@dataclass(slots=True)
class RefreshGrant:
    client_id: str
    email: str
    scopes: frozenset[str]


@dataclass(slots=True)
class AccessToken:
    email: str
    scopes: frozenset[str]
    expires_at: float  # simulated seconds
    # The developer project behind the call (service-account key's project, or
    # the OAuth client's): Gmail ties watch topics and push clients to it.
    project_id: str

    @property
    def metadata_only(self) -> bool:
        return SCOPE_METADATA in self.scopes and not (self.scopes & (GMAIL_READ_SCOPES - {SCOPE_METADATA}))


class TokenAuthority:
    def __init__(self, clock: SimClock, canonical, *, refusals: Refusals | None = None) -> None:
        self._clock = clock
        # callable(address) -> the mailbox's primary address (for an alias too), or None
        self._canonical = canonical
        self._refusals = refusals or Refusals()  # injected per-user token-endpoint refusals
        self._lock = threading.Lock()
        self.token_lifetime = 3600
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._service_accounts: dict[str, ServiceAccount] = {}
            self._clients: dict[str, OAuthClient] = {}
            self._refresh: dict[str, RefreshGrant] = {}
            self._access: dict[str, AccessToken] = {}
            self._revoked: set[str] = set()
            # (domain, service account client id) -> the scopes its administrator authorised
            self._delegations: dict[tuple[str, str], frozenset[str]] = {}
            self.token_lifetime = 3600

    # -- issuing (control API) -----------------------------------------------------------------
    def create_service_account(self, *, token_uri: str, project_id: str = DEFAULT_PROJECT,
                               name: str | None = None) -> dict:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode("ascii")
        key_id = secrets.token_hex(20)
        client_id = str(100000000000000000000 + secrets.randbelow(10**20))
        name = name or f"sim-{secrets.token_hex(4)}"
        email = f"{name}@{project_id}.iam.gserviceaccount.com"
        with self._lock:
            self._service_accounts[email] = ServiceAccount(email, client_id, key_id, key.public_key(), project_id)
        return {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": email,
            "client_id": client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
            "universe_domain": "googleapis.com",
        }

    def create_oauth_client(self, project_id: str = DEFAULT_PROJECT) -> tuple[str, str]:
        # As Google's: `<number of the project it was created in>-<hash>.apps.googleusercontent.com`.
        client_id = f"{project_number(project_id)}-{secrets.token_hex(16)}.apps.googleusercontent.com"
        secret = "GOCSPX-" + secrets.token_urlsafe(21)
        with self._lock:
            self._clients[client_id] = OAuthClient(secret, project_id)
        return client_id, secret

    def delete_oauth_client(self, client_id: str, *, deleted: bool = True) -> None:
        """Delete (or, `deleted=False`, restore) an OAuth client; KeyError if unknown."""
        with self._lock:
            self._clients[client_id].deleted = deleted

    def grant_delegation(self, domain: str, client_id: str, scopes) -> frozenset[str]:
        """Domain-wide delegation, as a Workspace administrator grants it (Admin console,
        Security > API controls): the service account `client_id` may impersonate the
        domain's users for `scopes` (the set replaces an earlier grant's)."""
        granted = frozenset(str(scope) for scope in scopes)
        if not granted or not client_id:
            raise ValueError("a delegation grant needs a client id and at least one scope")
        with self._lock:
            self._delegations[(domain.lower(), str(client_id))] = granted
        return granted

    def revoke_delegation(self, domain: str, client_id: str) -> bool:
        with self._lock:
            return self._delegations.pop((domain.lower(), str(client_id)), None) is not None

    def delegations(self, domain: str) -> dict[str, list[str]]:
        with self._lock:
            return {client: sorted(scopes) for (granted_domain, client), scopes in self._delegations.items()
                    if granted_domain == domain.lower()}

    def issue_refresh_token(self, client_id: str, email: str, scopes=None) -> str:
        with self._lock:
            if client_id not in self._clients:
                raise KeyError(client_id)
            token = "1//sim-" + secrets.token_urlsafe(32)
            self._refresh[token] = RefreshGrant(client_id, email.lower(), frozenset(scopes or DEFAULT_SCOPES))
        return token

    def revoke_user(self, email: str) -> None:
        with self._lock:
            self._revoked.add(email.lower())

    def restore_user(self, email: str) -> None:
        with self._lock:
            self._revoked.discard(email.lower())

    # -- the token endpoint ----------------------------------------------------------------------
    def grant(self, form: dict[str, str], own_token_uri: str) -> tuple[str, dict]:
        """Answer a token request; returns (user email, response body) or raises OAuthError."""
        grant_type = form.get("grant_type", "")
        if grant_type == JWT_BEARER:
            email, scopes, project_id = self._jwt_grant(form.get("assertion", ""), own_token_uri)
        elif grant_type == "refresh_token":
            email, scopes, project_id = self._refresh_grant(form)
        elif not grant_type:
            raise OAuthError("unsupported_grant_type", "Missing grant_type")
        else:
            raise OAuthError("unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        token = "ya29.sim-" + secrets.token_urlsafe(32)
        lifetime = int(self.token_lifetime)
        with self._lock:
            self._access[token] = AccessToken(email, scopes, self._clock.now() + lifetime, project_id)
            if len(self._access) > 50_000:
                self._prune_locked()
        return email, {"access_token": token, "expires_in": lifetime, "scope": " ".join(sorted(scopes)),
                       "token_type": "Bearer"}

    def _prune_locked(self) -> None:
        now = self._clock.now()
        self._access = {t: a for t, a in self._access.items() if a.expires_at > now}

    def _jwt_grant(self, assertion: str, own_token_uri: str) -> tuple[str, frozenset[str], str]:
        parts = assertion.split(".")
        if len(parts) != 3:
            raise OAuthError("invalid_request", "Invalid JWT: Malformed assertion.")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (ValueError, json.JSONDecodeError):
            raise OAuthError("invalid_request", "Invalid JWT: Malformed assertion.") from None
        if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
            raise OAuthError("invalid_grant", "Invalid JWT Signature.")
        with self._lock:
            account = self._service_accounts.get(str(claims.get("iss", "")))
        if account is None or header.get("kid") not in (None, account.key_id):
            raise OAuthError("invalid_grant", "Invalid JWT Signature.")
        try:
            account.public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"),
                                      padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise OAuthError("invalid_grant", "Invalid JWT Signature.") from None
        if claims.get("aud") not in (GOOGLE_TOKEN_URI, own_token_uri, *_LEGACY_TOKEN_URIS):
            raise OAuthError("invalid_grant", "Invalid JWT: Failed audience check.")
        now = time.time()
        try:
            iat, exp = int(claims["iat"]), int(claims["exp"])
        except (KeyError, TypeError, ValueError):
            raise OAuthError("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) "
                                              "and in a reasonable timeframe.") from None
        if exp - iat > 3600 or iat > now + _CLOCK_SKEW or exp < now - _CLOCK_SKEW:
            raise OAuthError("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and "
                                              "in a reasonable timeframe. Check your iat and exp values in the "
                                              "JWT claim.")
        scopes = frozenset(str(claims.get("scope", "")).split())
        if not scopes:
            raise OAuthError("invalid_scope", "Empty or missing scope not allowed.")
        subject = claims.get("sub")
        if not subject:
            # A service account has no mailbox of its own; Gmail needs delegation.
            return account.client_email.lower(), scopes, account.project_id
        subject = str(subject).lower()
        with self._lock:
            delegated = self._delegations.get((subject.rpartition("@")[2], account.client_id), frozenset())
        if not scopes <= delegated:
            # No grant for the subject's domain, or one that lacks a requested scope.
            raise OAuthError("unauthorized_client", UNAUTHORIZED_CLIENT_TEXT, status=401)
        primary = self._canonical(subject)
        if primary is not None and primary != subject:
            raise OAuthError("invalid_request", ALIAS_SUBJECT_TEXT)  # only a primary address can be impersonated
        refusal = self._refusals.token_error(subject, jwt=True)
        if refusal is not None:
            raise refusal
        if primary is None or subject in self._revoked:
            raise OAuthError("invalid_grant", "Invalid email or User ID")
        return subject, scopes, account.project_id

    def _refresh_grant(self, form: dict[str, str]) -> tuple[str, frozenset[str], str]:
        client_id = form.get("client_id", "")
        with self._lock:
            client = self._clients.get(client_id)
            grant = self._refresh.get(form.get("refresh_token", ""))
            revoked = grant is not None and grant.email in self._revoked
        if client is None:
            raise OAuthError("invalid_client", CLIENT_NOT_FOUND_TEXT, status=401)
        if client.deleted:
            raise OAuthError("deleted_client", CLIENT_DELETED_TEXT, status=401)
        if form.get("client_secret") != client.secret:
            raise OAuthError("invalid_client", "Unauthorized", status=401)
        if grant is None or grant.client_id != client_id:
            raise OAuthError("invalid_grant", "Bad Request")
        refusal = self._refusals.token_error(grant.email, jwt=False)
        if refusal is not None:
            raise refusal
        if revoked or self._canonical(grant.email) is None:
            raise OAuthError("invalid_grant", "Token has been expired or revoked.")
        requested = frozenset(form.get("scope", "").split())
        if requested and not requested <= grant.scopes:
            raise OAuthError("invalid_scope", "Bad Request")
        return grant.email, requested or grant.scopes, client.project_id

    # -- the API side ----------------------------------------------------------------------------
    def authenticate(self, authorization: str | None) -> AccessToken:
        """The token behind an `Authorization: Bearer …` header, or a 401/403 GmailError."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise GmailError(
                401, "Request is missing required authentication credential. Expected OAuth 2 access token, "
                     "login cookie or other valid authentication credential. See "
                     "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                "required", extra={"location": "Authorization", "locationType": "header"},
                headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
            )
        token = authorization[7:].strip()
        with self._lock:
            access = self._access.get(token)
            revoked = access is not None and access.email in self._revoked
        if access is None or revoked or access.expires_at <= self._clock.now():
            raise unauthenticated()
        if not access.scopes & GMAIL_READ_SCOPES:
            raise insufficient_scopes()
        return access
