"""Classify what google-api-python-client and google-auth raise into domain errors.

Gmail answers rate limits as 429, or as 403 with reason rateLimitExceeded /
userRateLimitExceeded, naming the retry time in the message ("User-rate limit
exceeded.  Retry after 2026-11-29T17:20:36.724Z"), seldom in a Retry-After
header: both are read. Delegation denied, domainPolicy,
insufficientPermissions and "Mail service not enabled" will not fix
themselves (GmailAccessRefused). At the token endpoint a revoked or
expired grant, a deleted user, unauthorized_client (no domain-wide
delegation for that domain and scope), invalid_client (unknown client, wrong
secret), deleted_client and a refused impersonation (an alias as the JWT
`sub`) are final (GmailAuthFailed); admin_policy_enforced (the Workspace
administrator blocks the app) and policy_enforced (Advanced Protection) are
final refusals (GmailAccessRefused). An invalid_grant about the JWT's iat/exp
is this host's clock being off (GmailClockSkew, retried). Anything else the
token endpoint answers (server_error, temporarily_unavailable, 5xx) is worth
retrying, as are transport failures.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import socket
import time
from datetime import datetime, timezone

import google.auth.exceptions
import httplib2
from googleapiclient.errors import HttpError
from prometheus_client import Counter

from mailwatch.domain import errors
from mailwatch.domain.text import storable_text
from mailwatch.gmail.calls import GmailCall

log = logging.getLogger(__name__)

RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"})
# 403 reasons that mean "not this user, not by this client, until an administrator acts".
REFUSAL_REASONS = frozenset({"domainPolicy", "insufficientPermissions"})
_RETRY_AFTER_TEXT = re.compile(r"Retry after (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d))")
# Google's text for a JWT whose iat/exp it finds unreasonable: our clock, not the grant.
_CLOCK_SKEW_TEXT = ("iat and exp", "reasonable timeframe")

CLOCK_SKEW = Counter(
    "mailwatch_gmail_clock_skew_total",
    "Token requests refused because this host's clock disagrees with Google's (invalid_grant on iat/exp)",
)


def _error_reasons(error: HttpError) -> tuple[str, str]:
    """(first reason, message) from a Google JSON error body, tolerant of junk; storable,
    since both end up in `mailboxes.last_error` and in ACCESS_REFUSED's event."""
    try:
        body = json.loads(error.content.decode("utf-8", "replace"))
        err = body.get("error", {}) if isinstance(body, dict) else {}
        if isinstance(err, str):  # OAuth-style {"error": "invalid_grant"}
            reason, message = err, body.get("error_description", "")
        else:
            details = err.get("errors") or [{}]
            reason, message = details[0].get("reason", ""), err.get("message", "")
    except (ValueError, AttributeError, TypeError, IndexError):
        return "", ""
    return storable_text(reason), storable_text(message)


def _retry_after(error: HttpError) -> float | None:
    """Retry-After in seconds (delta-seconds form); None when absent or an HTTP date (see `_retry_at`)."""
    value = error.resp.get("retry-after") if error.resp is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _retry_at(error: HttpError, message: str) -> datetime | None:
    """The instant Gmail named: "Retry after <RFC 3339>" in the message, or a Retry-After HTTP date."""
    match = _RETRY_AFTER_TEXT.search(message)
    if match:
        try:
            return datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
        except ValueError:
            pass
    value = error.resp.get("retry-after") if error.resp is not None else None
    if value is not None and not value.strip().replace(".", "", 1).isdigit():
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return None


def _is_refusal(status: int, reason: str, message: str) -> bool:
    if status == 403:
        return reason in REFUSAL_REASONS or (reason == "forbidden" and "delegation denied" in message.lower())
    return status == 400 and reason == "failedPrecondition"


def _clock_skew(operation: str, description: str) -> errors.GmailClockSkew:
    """Say it loudly, with this host's clock: the operator has to fix the clock."""
    CLOCK_SKEW.inc()
    now = time.time()
    log.error(
        "Google refused a token request for %s because of the JWT's iat/exp: this host's clock is probably off "
        "(host clock %s, unix %.3f). Fix the clock (NTP); mailwatch keeps retrying.",
        operation, datetime.fromtimestamp(now, tz=timezone.utc).isoformat(), now,
        extra={"host_clock": now},
    )
    return errors.GmailClockSkew(
        f"{operation}: the token endpoint refused the JWT's iat/exp (this host's clock is off?): {description}",
        metadata={"oauth_error": "invalid_grant"},
    )


# Token-endpoint errors that no retry fixes: the grant, the client or the delegation is gone
# (AUTH_FAILED until registered again with working credentials) ...
FINAL_TOKEN_ERRORS = frozenset({"invalid_grant", "unauthorized_client", "invalid_client", "deleted_client"})
# ... or a policy refuses this user to this client (ACCESS_REFUSED until an administrator acts).
POLICY_TOKEN_ERRORS = frozenset({"admin_policy_enforced", "policy_enforced"})
# invalid_request is usually a malformed request (ours: retried like any other failure), except
# Google's refusal to impersonate an address that is not a user's primary one.
_IMPERSONATION_TEXT = "invalid impersonation"


def _refresh_error(exc: google.auth.exceptions.RefreshError, operation: str) -> errors.GmailError:
    payload = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
    code = storable_text(str(payload.get("error", "")))
    description = storable_text(str(payload.get("error_description", "")))
    text = str(exc)
    if not code:  # older google-auth: only "invalid_grant: description" in the text
        known = sorted(FINAL_TOKEN_ERRORS | POLICY_TOKEN_ERRORS, key=len, reverse=True)
        code = next((c for c in known if c in text), "")
        description = description or text
    if code == "invalid_grant" and all(part in (description or text) for part in _CLOCK_SKEW_TEXT):
        return _clock_skew(operation, description)
    said = f"{code}: {description}" if description else code
    metadata = {"oauth_error": code, "oauth_error_description": description}
    if code in POLICY_TOKEN_ERRORS:
        return errors.GmailAccessRefused(f"{operation}: the token endpoint refused by policy ({said})",
                                         metadata={**metadata, "gmail_reason": code})
    if code in FINAL_TOKEN_ERRORS or (code == "invalid_request" and _IMPERSONATION_TEXT in description.lower()):
        return errors.GmailAuthFailed(f"{operation}: credentials rejected by the token endpoint ({said})",
                                      metadata=metadata)
    return errors.GmailUnavailable(f"{operation}: could not obtain an access token" + (f" ({said})" if code else ""),
                                   metadata=metadata if code else None)


# Gmail's refusal of a topic outside the caller's project names the caller's project.
_PROJECT_REFUSAL = re.compile(r"does not match projects/(?P<project>[^/]+)/topics/\*")


def _refused_for_project(status: int, message: str) -> str | None:
    """The calling credentials' project, when users.watch refused the topic for being outside it."""
    match = _PROJECT_REFUSAL.search(message) if status == 400 else None
    if match is None or match.group("project") == "SOME_PROJECT":  # a malformed topic, not another project
        return None
    return match.group("project")


def _is_topic_problem(status: int, message: str) -> bool:
    """users.watch names the topic when it is malformed (400), missing (404,
    "Resource not found (resource=…)") or not publishable by Gmail (403)."""
    text = message.lower()
    if status == 400:
        return "topic" in text
    if status == 404:
        return "resource not found" in text or "topic" in text
    if status == 403:
        return "topic" in text or "pubsub" in text or "not authorized to perform this action" in text
    return False


# What a 404 means depends on the call; any other call's 404 is an unknown mailbox.
_NOT_FOUND: dict[GmailCall, type[errors.GmailError]] = {
    GmailCall.HISTORY_LIST: errors.GmailHistoryExpired,
    GmailCall.MESSAGES_GET: errors.GmailMessageNotFound,
    GmailCall.ATTACHMENTS_GET: errors.GmailMessageNotFound,
}


def _watch_refusal(status: int, message: str, detail: str, meta: dict) -> errors.GmailError | None:
    """users.watch's own refusals: another push client, the topic, the label filter."""
    if status == 400 and "only one user push notification client" in message.lower():
        return errors.GmailPushClientConflict(f"{detail}: {message}", metadata=meta)
    caller_project = _refused_for_project(status, message)
    if caller_project is not None:
        # GmailClient.watch knows the topic and completes the message.
        return errors.TopicProjectMismatch(f"{detail}: {message}",
                                           metadata={**meta, "credentials_project": caller_project})
    if _is_topic_problem(status, message):
        return errors.GmailTopicNotPublishable(f"{detail}: {message}", metadata=meta)
    if status == 400 and "label" in message.lower():
        # Gmail: 400 invalidArgument "Invalid label: <id>" for a label the mailbox lacks.
        return errors.GmailLabelRejected(f"Gmail refused the label filter: {message}", metadata=meta)
    return None


def _list_refusal(status: int, message: str, detail: str, meta: dict) -> errors.GmailError | None:
    """messages.list's 400 for its search query ("Invalid query: …") or a label id the mailbox
    lacks ("Invalid label: <id>")."""
    if status == 400 and message.lower().startswith("invalid query"):
        return errors.GmailQueryRejected(f"Gmail refused the query: {message}", metadata=meta)
    if status == 400 and "label" in message.lower():
        return errors.GmailLabelRejected(f"Gmail refused the label ids: {message}", metadata=meta)
    return None


def _attachment_refusal(status: int, message: str, detail: str, meta: dict) -> errors.GmailError | None:
    """attachments.get's 400 for an id that is not one of the message's ("Invalid attachment token")."""
    if status == 400 and "attachment" in message.lower():
        return errors.GmailAttachmentNotFound(f"{detail}: {message}", metadata=meta)
    return None


# Refusals only one call can meet, read from its status and message.
_CALL_REFUSALS = {
    GmailCall.WATCH: _watch_refusal,
    GmailCall.MESSAGES_LIST: _list_refusal,
    GmailCall.ATTACHMENTS_GET: _attachment_refusal,
}


def classify(exc: BaseException, *, call: GmailCall) -> errors.GmailError:
    """Map an exception from a Gmail call to the domain error the service acts on."""
    if isinstance(exc, errors.GmailError):
        return exc
    if isinstance(exc, google.auth.exceptions.RefreshError):
        return _refresh_error(exc, call)
    if isinstance(exc, google.auth.exceptions.TransportError):
        return errors.GmailUnavailable(f"{call}: token endpoint unreachable")
    if isinstance(exc, HttpError):
        return _http_error(exc, call)
    if isinstance(exc, (OSError, socket.timeout, httplib2.HttpLib2Error, TimeoutError)):
        return errors.GmailUnavailable(f"{call}: {type(exc).__name__} talking to Gmail")
    raise exc


def _http_error(exc: HttpError, call: GmailCall) -> errors.GmailError:
    status = exc.resp.status if exc.resp is not None else 0
    reason, message = _error_reasons(exc)
    meta = {"http_status": str(status), "gmail_reason": reason}
    detail = f"{call}: Gmail answered {status}" + (f" {reason}" if reason else "")
    if status == 429 or (status == 403 and reason in RATE_LIMIT_REASONS):
        return errors.GmailRateLimited(f"{detail}: {message}" if message else detail, metadata=meta,
                                       retry_after=_retry_after(exc), retry_at=_retry_at(exc, message))
    if _is_refusal(status, reason, message):
        return errors.GmailAccessRefused(f"{detail}: {message}", metadata=meta)
    if status == 401:
        return errors.GmailAuthFailed(detail, metadata=meta)
    refusal = _CALL_REFUSALS[call](status, message, detail, meta) if call in _CALL_REFUSALS else None
    if refusal is not None:
        return refusal
    if status == 404:
        return _NOT_FOUND.get(call, errors.GmailMailboxNotFound)(detail, metadata=meta)
    if status == 403:
        return errors.GmailPermissionDenied(f"{detail}: {message}", metadata=meta)
    if status >= 500:
        return errors.GmailUnavailable(detail, metadata=meta)
    return errors.GmailBadRequest(f"{detail}: {message}", metadata=meta)
