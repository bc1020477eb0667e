"""Classify what google-api-python-client and google-auth raise into domain errors.

Gmail answers rate limits as 429, or as 403 with reason rateLimitExceeded /
userRateLimitExceeded; everything else in 4xx is the caller's problem and
5xx / transport failures are worth retrying.
"""

from __future__ import annotations

import json
import re
import socket

import google.auth.exceptions
import httplib2
from googleapiclient.errors import HttpError

from mailwatch.domain import errors

RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"})


def _error_reasons(error: HttpError) -> tuple[str, str]:
    """(first reason, message) from a Google JSON error body, tolerant of junk."""
    try:
        body = json.loads(error.content.decode("utf-8", "replace"))
        err = body.get("error", {}) if isinstance(body, dict) else {}
        if isinstance(err, str):  # OAuth-style {"error": "invalid_grant"}
            return err, str(body.get("error_description", ""))
        details = err.get("errors") or [{}]
        return str(details[0].get("reason", "")), str(err.get("message", ""))
    except (ValueError, AttributeError, TypeError, IndexError):
        return "", ""


def _retry_after(error: HttpError) -> float | None:
    value = error.resp.get("retry-after") if error.resp is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date; the caller's own backoff applies


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


def classify(exc: BaseException, *, operation: str) -> errors.GmailError:
    """Map an exception from a Gmail call to the domain error the service acts on."""
    if isinstance(exc, errors.GmailError):
        return exc
    if isinstance(exc, google.auth.exceptions.RefreshError):
        # invalid_grant (revoked / expired refresh token, undelegated subject) is
        # final until the tenant re-registers; anything else may be transient.
        text = str(exc)
        if "invalid_grant" in text or "unauthorized_client" in text or "access_denied" in text:
            return errors.GmailAuthFailed(f"{operation}: credentials rejected by the token endpoint (invalid_grant)")
        retryable = getattr(exc, "retryable", False)
        if retryable:
            return errors.GmailUnavailable(f"{operation}: token endpoint unavailable")
        return errors.GmailAuthFailed(f"{operation}: could not obtain an access token")
    if isinstance(exc, google.auth.exceptions.TransportError):
        return errors.GmailUnavailable(f"{operation}: token endpoint unreachable")
    if isinstance(exc, HttpError):
        status = exc.resp.status if exc.resp is not None else 0
        reason, message = _error_reasons(exc)
        meta = {"http_status": str(status), "gmail_reason": reason}
        detail = f"{operation}: Gmail answered {status}" + (f" {reason}" if reason else "")
        if status == 429 or (status == 403 and reason in RATE_LIMIT_REASONS):
            return errors.GmailRateLimited(detail, retry_after=_retry_after(exc), metadata=meta)
        if status == 401:
            return errors.GmailAuthFailed(detail, metadata=meta)
        if status == 404 and operation == "history.list":
            return errors.GmailHistoryExpired(detail, metadata=meta)
        if status == 404 and operation == "messages.get":
            return errors.GmailMessageNotFound(detail, metadata=meta)
        if operation == "watch" and status == 400 and "only one user push notification client" in message.lower():
            return errors.GmailPushClientConflict(f"{detail}: {message}", metadata=meta)
        caller_project = _refused_for_project(status, message) if operation == "watch" else None
        if caller_project is not None:
            # GmailClient.watch knows the topic and completes the message.
            return errors.TopicProjectMismatch(f"{detail}: {message}",
                                               metadata={**meta, "credentials_project": caller_project})
        if operation == "watch" and _is_topic_problem(status, message):
            return errors.GmailTopicNotPublishable(f"{detail}: {message}", metadata=meta)
        if operation == "watch" and status == 400 and "label" in message.lower():
            # Gmail: 400 invalidArgument "Invalid label: <id>" for a label the mailbox lacks.
            return errors.GmailLabelRejected(f"Gmail refused the label filter: {message}", metadata=meta)
        if status == 404:
            return errors.GmailMailboxNotFound(detail, metadata=meta)
        if status == 403:
            return errors.GmailPermissionDenied(f"{detail}: {message}", metadata=meta)
        if status >= 500:
            return errors.GmailUnavailable(detail, metadata=meta)
        return errors.GmailBadRequest(f"{detail}: {message}", metadata=meta)
    if isinstance(exc, (OSError, socket.timeout, httplib2.HttpLib2Error, TimeoutError)):
        return errors.GmailUnavailable(f"{operation}: {type(exc).__name__} talking to Gmail")
    raise exc
