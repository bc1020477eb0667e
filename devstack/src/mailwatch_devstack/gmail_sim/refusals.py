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
* ``unauthorizedClient``: ``unauthorized_client`` — the OAuth client not allowed for the user
  (a service account without domain-wide delegation gets it anyway: see ``auth.py``).
* ``adminPolicyEnforced``: ``admin_policy_enforced`` — the user's Workspace administrator
  blocks the app (API controls).
* ``policyEnforced``: ``policy_enforced`` — the account's Advanced Protection refuses the app
  (refresh-token grants only: it concerns apps a user consented to).
"""

from __future__ import annotations

import threading

from mailwatch_devstack.gmail_sim.errors import GmailError, OAuthError, forbidden, insufficient_scopes

CLOCK_SKEW_TEXT = ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
                   "Check your iat and exp values in the JWT claim.")
UNAUTHORIZED_CLIENT_TEXT = ("Client is unauthorized to retrieve access tokens using this method, or client not "
                            "authorized for any of the scopes requested.")
# Google's descriptions of the two policy refusals (its OAuth guide's error table).
ADMIN_POLICY_TEXT = ("The Google Account is unable to authorize one or more scopes requested due to the policies "
                     "of their Google Workspace administrator.")
POLICY_TEXT = ("The Google Account is unable to authorize one or more scopes requested due to the policies of "
               "Advanced Protection.")

API_KINDS = frozenset({"delegationDenied", "domainPolicy", "insufficientPermissions", "mailServiceNotEnabled"})
TOKEN_KINDS = frozenset({"clockSkew", "unauthorizedClient", "adminPolicyEnforced", "policyEnforced"})
_REFRESH_ONLY = frozenset({"policyEnforced"})
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
    if kind == "adminPolicyEnforced":
        return OAuthError("admin_policy_enforced", ADMIN_POLICY_TEXT)
    if kind == "policyEnforced":
        return OAuthError("policy_enforced", POLICY_TEXT)
    return OAuthError("unauthorized_client", UNAUTHORIZED_CLIENT_TEXT, status=401)


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
        if kind not in TOKEN_KINDS or (jwt and kind in _REFRESH_ONLY) or (kind == "clockSkew" and not jwt):
            return None
        return token_refusal(kind)
