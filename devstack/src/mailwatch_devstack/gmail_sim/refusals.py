"""Permanent refusals, injectable per user: answers that will not fix themselves.

API refusals (answered to every Gmail call for the user):

* ``delegationDenied``: 403 "Delegation denied for <user>", reason ``forbidden``;
* ``domainPolicy``: 403 "The domain administrators have disabled Gmail apps.", reason ``domainPolicy``;
* ``insufficientPermissions``: 403 "Request had insufficient authentication scopes.";
* ``mailServiceNotEnabled``: 400 "Mail service not enabled", reason ``failedPrecondition``.

Token-endpoint refusals (answered to grants for the user):

* ``clockSkew``: ``invalid_grant`` "Invalid JWT: Token must be a short-lived token (60 minutes)
  and in a reasonable timeframe. Check your iat and exp values in the JWT claim." — what Google
  says when the caller's clock is off. Transient for the caller (fix the clock), yet the same
  ``invalid_grant`` error code as a revoked grant. Only JWT (service-account) grants carry
  iat/exp, so only those get it.
* ``unauthorizedClient``: ``unauthorized_client`` — domain-wide delegation not granted to the
  service account (or the OAuth client not allowed for the user).
"""

from __future__ import annotations

import threading

from mailwatch_devstack.gmail_sim.errors import GmailError, OAuthError, forbidden, insufficient_scopes

CLOCK_SKEW_TEXT = ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
                   "Check your iat and exp values in the JWT claim.")
UNAUTHORIZED_CLIENT_TEXT = ("Client is unauthorized to retrieve access tokens using this method, or client not "
                            "authorized for any of the scopes requested.")

API_KINDS = frozenset({"delegationDenied", "domainPolicy", "insufficientPermissions", "mailServiceNotEnabled"})
TOKEN_KINDS = frozenset({"clockSkew", "unauthorizedClient"})
KINDS = API_KINDS | TOKEN_KINDS


def mail_service_not_enabled() -> GmailError:
    return GmailError(400, "Mail service not enabled", "failedPrecondition", status="FAILED_PRECONDITION")


def api_refusal(kind: str, user: str) -> GmailError:
    if kind == "delegationDenied":
        return forbidden(f"Delegation denied for {user}")
    if kind == "domainPolicy":
        return GmailError(403, "The domain administrators have disabled Gmail apps.", "domainPolicy")
    if kind == "insufficientPermissions":
        return insufficient_scopes()
    return mail_service_not_enabled()


def token_refusal(kind: str) -> OAuthError:
    if kind == "clockSkew":
        return OAuthError("invalid_grant", CLOCK_SKEW_TEXT)
    return OAuthError("unauthorized_client", UNAUTHORIZED_CLIENT_TEXT)


class Refusals:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_user: dict[str, str] = {}

    def reset(self) -> None:
        with self._lock:
            self._by_user.clear()

    def refuse(self, user: str, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown refusal {kind!r}; one of {sorted(KINDS)}")
        with self._lock:
            self._by_user[user.lower()] = kind

    def lift(self, user: str) -> bool:
        with self._lock:
            return self._by_user.pop(user.lower(), None) is not None

    def all(self) -> dict[str, str]:
        with self._lock:
            return dict(self._by_user)

    def api_error(self, user: str) -> GmailError | None:
        with self._lock:
            kind = self._by_user.get(user.lower())
        return api_refusal(kind, user.lower()) if kind in API_KINDS else None

    def token_error(self, user: str, *, jwt: bool) -> OAuthError | None:
        with self._lock:
            kind = self._by_user.get(user.lower())
        if kind == "unauthorizedClient" or (kind == "clockSkew" and jwt):
            return token_refusal(kind)
        return None
