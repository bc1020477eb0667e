import json

import google.auth.exceptions
import httplib2
import pytest
from googleapiclient.errors import HttpError

from mailwatch.domain import errors
from mailwatch.gmail.errors import classify


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
        (http_error(403, "forbidden", "Delegation denied for a@x"), "history.list", errors.GmailPermissionDenied),
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
        (http_error(400, "failedPrecondition", "Mail service not enabled"), "watch", errors.GmailBadRequest),
        (http_error(500, "backendError"), "history.list", errors.GmailUnavailable),
        (http_error(503, ""), "watch", errors.GmailUnavailable),
        (google.auth.exceptions.RefreshError("invalid_grant: Token has been revoked."), "watch", errors.GmailAuthFailed),
        (google.auth.exceptions.TransportError("connection refused"), "watch", errors.GmailUnavailable),
        (ConnectionRefusedError(), "history.list", errors.GmailUnavailable),
    ],
)
def test_classification(exc, operation, expected):
    assert type(classify(exc, operation=operation)) is expected


def test_retry_after_is_kept():
    error = classify(http_error(429, "rateLimitExceeded", headers={"retry-after": "17"}), operation="history.list")
    assert isinstance(error, errors.GmailRateLimited) and error.retry_after == 17.0


def test_garbage_body_still_classifies_by_status():
    resp = httplib2.Response({"status": 502})
    assert isinstance(classify(HttpError(resp, b"<html>bad gateway"), operation="watch"), errors.GmailUnavailable)


def test_programming_errors_are_not_swallowed():
    with pytest.raises(KeyError):
        classify(KeyError("x"), operation="watch")


def test_topic_outside_the_callers_project_names_that_project():
    refusal = http_error(400, "invalidArgument", "Invalid topicName does not match projects/tenant-a/topics/*")
    error = classify(refusal, operation="watch")
    assert error.reason == "TOPIC_PROJECT_MISMATCH" and error.metadata["credentials_project"] == "tenant-a"
