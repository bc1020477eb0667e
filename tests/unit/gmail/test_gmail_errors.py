import json
from datetime import datetime, timezone

import google.auth.exceptions
import httplib2
import pytest
from googleapiclient.errors import HttpError

from mailwatch.domain import errors
from mailwatch.gmail.calls import GmailCall
from mailwatch.gmail.errors import classify

CLOCK_SKEW = ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
              "Check your iat and exp values in the JWT claim.")


def http_error(status, reason="", message="", headers=None):
    resp = httplib2.Response({"status": status, **(headers or {})})
    body = {"error": {"code": status, "message": message, "errors": [{"reason": reason, "message": message}]}}
    return HttpError(resp, json.dumps(body).encode())


@pytest.mark.parametrize(
    "exc,operation,expected",
    [
        (http_error(429, "rateLimitExceeded"), "history.list", errors.GmailRateLimited),
        (http_error(403, "userRateLimitExceeded"), "history.list", errors.GmailRateLimited),
        (http_error(403, "rateLimitExceeded"), "watch", errors.GmailRateLimited),
        (http_error(429, "rateLimitExceeded", "Quota exceeded for quota metric 'Queries' and limit 'Queries per "
                    "minute' of service 'gmail.googleapis.com' for consumer 'project_number:123456789012'."),
         "history.list", errors.GmailRateLimited),  # the per-project limit: no retry time, back off
        (http_error(403, "forbidden", "Delegation denied for a@x"), "history.list", errors.GmailAccessRefused),
        (http_error(403, "domainPolicy", "The domain administrators have disabled Gmail apps."), "watch",
         errors.GmailAccessRefused),
        (http_error(403, "insufficientPermissions", "Request had insufficient authentication scopes."),
         "history.list", errors.GmailAccessRefused),
        (http_error(400, "failedPrecondition", "Mail service not enabled"), "watch", errors.GmailAccessRefused),
        (http_error(403, "forbidden", "Metadata scope doesn't allow format FULL"), "messages.get",
         errors.GmailPermissionDenied),
        (http_error(401, "authError"), "history.list", errors.GmailAuthFailed),
        (http_error(404, "notFound"), "history.list", errors.GmailHistoryExpired),
        (http_error(404, "notFound", "Resource not found (resource=t)."), "watch", errors.GmailTopicNotPublishable),
        (http_error(400, "invalidArgument", "Invalid topicName does not match projects/SOME_PROJECT/topics/*"),
         "watch", errors.GmailTopicNotPublishable),
        (http_error(400, "invalidArgument", "Invalid topicName does not match projects/X/topics/*"), "watch",
         errors.TopicProjectMismatch),
        (http_error(400, "invalidArgument", "Only one user push notification client allowed per developer "
                                            "(call /stop then try again)"), "watch", errors.GmailPushClientConflict),
        (http_error(403, "forbidden", "User not authorized to perform this action."), "watch",
         errors.GmailTopicNotPublishable),
        (http_error(404, "notFound"), "getProfile", errors.GmailMailboxNotFound),
        (http_error(400, "invalidArgument", "Invalid pageToken"), "history.list", errors.GmailBadRequest),
        (http_error(400, "invalidArgument", "Invalid label: Label_424242"), "watch", errors.GmailLabelRejected),
        (http_error(400, "invalidArgument", "Invalid label: Label_424242"), "messages.list",
         errors.GmailLabelRejected),
        (http_error(400, "invalidArgument", "Invalid pageToken"), "messages.list", errors.GmailBadRequest),
        (http_error(400, "invalidArgument", "Invalid query: the simulator cannot evaluate the search operator "
                                            "'label_id:'"), "messages.list", errors.GmailQueryRejected),
        (http_error(404, "notFound"), "messages.list", errors.GmailMailboxNotFound),
        (http_error(400, "invalidArgument", "Invalid attachment token"), "messages.attachments.get",
         errors.GmailAttachmentNotFound),
        (http_error(404, "notFound", "Requested entity was not found."), "messages.attachments.get",
         errors.GmailMessageNotFound),
        (http_error(500, "backendError"), "history.list", errors.GmailUnavailable),
        (http_error(503, ""), "watch", errors.GmailUnavailable),
        (google.auth.exceptions.RefreshError("invalid_grant: Token has been revoked."), "watch", errors.GmailAuthFailed),
        (google.auth.exceptions.RefreshError("invalid_grant: Token has been expired or revoked.",
                                             {"error": "invalid_grant",
                                              "error_description": "Token has been expired or revoked."}),
         "watch", errors.GmailAuthFailed),
        (google.auth.exceptions.RefreshError("invalid_grant: Invalid email or User ID",
                                             {"error": "invalid_grant", "error_description": "Invalid email or User ID"}),
         "watch", errors.GmailAuthFailed),
        (google.auth.exceptions.RefreshError("unauthorized_client: Client is unauthorized",
                                             {"error": "unauthorized_client"}), "watch", errors.GmailAuthFailed),
        (google.auth.exceptions.RefreshError(f"invalid_grant: {CLOCK_SKEW}",
                                             {"error": "invalid_grant", "error_description": CLOCK_SKEW}),
         "history.list", errors.GmailClockSkew),
        (google.auth.exceptions.RefreshError("invalid_client: Unauthorized", {"error": "invalid_client"}), "watch",
         errors.GmailAuthFailed),
        (google.auth.exceptions.RefreshError("deleted_client: The OAuth client was deleted.",
                                             {"error": "deleted_client",
                                              "error_description": "The OAuth client was deleted."}),
         "history.list", errors.GmailAuthFailed),
        (google.auth.exceptions.RefreshError("admin_policy_enforced: blocked", {"error": "admin_policy_enforced"}),
         "watch", errors.GmailAccessRefused),
        (google.auth.exceptions.RefreshError("policy_enforced: blocked", {"error": "policy_enforced"}),
         "history.list", errors.GmailAccessRefused),
        (google.auth.exceptions.RefreshError("admin_policy_enforced: blocked"), "watch", errors.GmailAccessRefused),
        (google.auth.exceptions.RefreshError(
            "invalid_request: Invalid impersonation prn email address.",
            {"error": "invalid_request", "error_description": "Invalid impersonation prn email address."}),
         "watch", errors.GmailAuthFailed),
        (google.auth.exceptions.RefreshError("invalid_request: Missing grant_type",
                                             {"error": "invalid_request", "error_description": "Missing grant_type"}),
         "watch", errors.GmailUnavailable),
        (google.auth.exceptions.RefreshError("server_error", {"error": "server_error"}), "watch",
         errors.GmailUnavailable),
        (google.auth.exceptions.TransportError("connection refused"), "watch", errors.GmailUnavailable),
        (ConnectionRefusedError(), "history.list", errors.GmailUnavailable),
    ],
)
def test_classification(exc, operation, expected):
    assert type(classify(exc, call=GmailCall(operation))) is expected


def test_retry_time_is_read_from_the_message():
    message = "User-rate limit exceeded.  Retry after 2026-11-29T17:20:36.724Z"
    error = classify(http_error(429, "rateLimitExceeded", message), call=GmailCall.HISTORY_LIST)
    assert isinstance(error, errors.GmailRateLimited) and error.retryable
    assert error.retry_at == datetime(2026, 11, 29, 17, 20, 36, 724000, tzinfo=timezone.utc)
    now = datetime(2026, 11, 29, 17, 0, tzinfo=timezone.utc)
    assert error.not_before(now) == error.retry_at
    assert classify(http_error(403, "userRateLimitExceeded", message), call=GmailCall.WATCH).retry_at == error.retry_at


def test_retry_after_http_date():
    error = classify(http_error(429, "rateLimitExceeded", headers={"retry-after": "Sun, 29 Nov 2026 17:20:36 GMT"}),
                     call=GmailCall.HISTORY_LIST)
    assert error.retry_at == datetime(2026, 11, 29, 17, 20, 36, tzinfo=timezone.utc) and error.retry_after is None


def test_clock_skew_is_transient_counted_and_logged_with_the_host_clock(caplog):
    from mailwatch.gmail.errors import CLOCK_SKEW as counter

    before = counter._value.get()
    exc = google.auth.exceptions.RefreshError(f"invalid_grant: {CLOCK_SKEW}",
                                              {"error": "invalid_grant", "error_description": CLOCK_SKEW})
    with caplog.at_level("ERROR", logger="mailwatch.gmail.errors"):
        error = classify(exc, call=GmailCall.HISTORY_LIST)
    assert error.retryable and error.reason == "GMAIL_CLOCK_SKEW"
    assert counter._value.get() == before + 1
    assert "host clock" in caplog.text and str(datetime.now(timezone.utc).year) in caplog.text


def test_permanent_failures_are_not_retryable():
    assert not classify(http_error(403, "domainPolicy", "x"), call=GmailCall.WATCH).retryable
    assert not classify(google.auth.exceptions.RefreshError("invalid_grant: Bad Request"), call=GmailCall.WATCH).retryable
    assert classify(http_error(500, "backendError"), call=GmailCall.WATCH).retryable


def test_retry_after_is_kept():
    error = classify(http_error(429, "rateLimitExceeded", headers={"retry-after": "17"}), call=GmailCall.HISTORY_LIST)
    assert isinstance(error, errors.GmailRateLimited) and error.retry_after == 17.0


def test_garbage_body_still_classifies_by_status():
    resp = httplib2.Response({"status": 502})
    assert isinstance(classify(HttpError(resp, b"<html>bad gateway"), call=GmailCall.WATCH), errors.GmailUnavailable)


def test_programming_errors_are_not_swallowed():
    with pytest.raises(KeyError):
        classify(KeyError("x"), call=GmailCall.WATCH)


def test_topic_outside_the_callers_project_names_that_project():
    refusal = http_error(400, "invalidArgument", "Invalid topicName does not match projects/tenant-a/topics/*")
    error = classify(refusal, call=GmailCall.WATCH)
    assert error.reason == "TOPIC_PROJECT_MISMATCH" and error.metadata["credentials_project"] == "tenant-a"


def test_gmail_error_text_is_storable():
    # The reason and message end in mailboxes.last_error and ACCESS_REFUSED's event.
    error = classify(http_error(403, "domain\x00Policy", "Disabled\x00by admin\ud800"), call=GmailCall.WATCH)
    assert "Disabled\ufffdby admin?" in error.message and "\x00" not in error.message
    assert error.metadata["gmail_reason"] == "domain\ufffdPolicy"
