"""Fault injection, quota counters, watch validation and expiry, batch — through the real client."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from mailwatch_devstack.gmail_sim import SimulatorControlError
from tests.integration.gmail_sim.support import ALICE, BOB

pytestmark = pytest.mark.integration


@pytest.fixture
def alice(control, gmail):
    control.create_mailboxes([ALICE, BOB])
    service = gmail.for_user(ALICE)
    service.users().getProfile(userId="me").execute()  # token fetched before faults are armed
    control.reset_counters()
    return service


def reason_of(exc: HttpError) -> str:
    return json.loads(exc.content)["error"]["errors"][0]["reason"]


def test_429_names_the_retry_time_in_the_message_and_locks_the_user_out(control, alice):
    control.inject_fault("429", method="users.history.list", count=1, retry_after=900)
    start = str(control.history_id(ALICE))
    assert alice.users().getProfile(userId="me").execute()  # before the lockout, other methods work
    now = control.now()
    with pytest.raises(HttpError) as limited:
        alice.users().history().list(userId="me", startHistoryId=start).execute()
    assert limited.value.resp.status == 429
    assert "retry-after" not in limited.value.resp  # Gmail names the time in the message only
    error = json.loads(limited.value.content)["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["errors"] == [{"message": error["message"], "domain": "usageLimits", "reason": "rateLimitExceeded"}]
    match = re.fullmatch(r"User-rate limit exceeded\.  Retry after (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z",
                         error["message"])
    assert match, error["message"]
    retry_at = datetime.fromisoformat(match.group(1)).replace(tzinfo=timezone.utc).timestamp()
    assert 899 <= retry_at - now <= 901
    # The lockout covers every method of the user until that time, with the same answer, and still costs quota.
    for call in (alice.users().getProfile(userId="me"), alice.users().labels().list(userId="me")):
        with pytest.raises(HttpError) as again:
            call.execute()
        assert again.value.resp.status == 429 and json.loads(again.value.content)["error"] == error
    assert control.counters()["quotaUnits"][ALICE] == 1 + 2 + 1 + 1
    assert control.faults()["lockouts"][ALICE]["reason"] == "rateLimitExceeded"
    control.advance_clock(899)
    with pytest.raises(HttpError):
        alice.users().getProfile(userId="me").execute()
    control.advance_clock(2)
    assert alice.users().history().list(userId="me", startHistoryId=start).execute()["historyId"] == start
    assert control.faults()["lockouts"] == {}


def test_403_user_rate_limit_exceeded(control, alice):
    control.inject_fault("userRateLimitExceeded", user=ALICE, count=1, retry_after=60)
    with pytest.raises(HttpError) as limited:
        alice.users().messages().list(userId="me").execute()
    assert limited.value.resp.status == 403
    error = json.loads(limited.value.content)["error"]
    assert error["errors"][0] == {"message": error["message"], "domain": "usageLimits",
                                  "reason": "userRateLimitExceeded"}
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["message"].startswith("User-rate limit exceeded.  Retry after ")
    assert "retry-after" not in limited.value.resp
    with pytest.raises(HttpError):
        alice.users().messages().list(userId="me").execute()  # locked out, though the rule is spent
    control.advance_clock(61)
    alice.users().messages().list(userId="me").execute()


def test_lockouts_are_per_user_and_cleared_with_the_faults(control, alice, gmail):
    control.inject_fault("429", user=ALICE, count=1)
    with pytest.raises(HttpError):
        alice.users().getProfile(userId="me").execute()
    gmail.for_user(BOB).users().getProfile(userId="me").execute()
    control.clear_faults()
    alice.users().getProfile(userId="me").execute()


def test_too_many_concurrent_requests_fault(control, alice):
    control.inject_fault("concurrentRequests", count=1)
    with pytest.raises(HttpError) as limited:
        alice.users().getProfile(userId="me").execute()
    error = json.loads(limited.value.content)["error"]
    assert limited.value.resp.status == 429 and error["message"] == "Too many concurrent requests for user."
    assert error["errors"][0]["reason"] == "rateLimitExceeded"
    alice.users().getProfile(userId="me").execute()  # no lockout


def test_500_backend_error_and_client_retry(control, alice):
    control.inject_fault("500", method="users.getProfile", count=1)
    with pytest.raises(HttpError) as failed:
        alice.users().getProfile(userId="me").execute()
    assert failed.value.resp.status == 500 and reason_of(failed.value) == "backendError"
    control.inject_fault("500", method="users.getProfile", count=1)
    # googleapiclient's own retry (num_retries) gets through once the fault is spent.
    request = alice.users().getProfile(userId="me")
    request._sleep = lambda seconds: None
    assert request.execute(num_retries=2)["emailAddress"] == ALICE


def test_fraction_of_calls_fail(control, alice):
    control.configure(seed=7)
    control.inject_fault("500", fraction=0.5)
    failures = 0
    for _ in range(60):
        try:
            alice.users().labels().list(userId="me").execute()
        except HttpError as error:
            assert error.resp.status == 500
            failures += 1
    assert 15 <= failures <= 45
    control.clear_faults()
    alice.users().labels().list(userId="me").execute()
    assert control.faults()["rules"] == []


def test_fault_for_other_user_does_not_apply(control, alice):
    control.inject_fault("429", user=BOB)
    alice.users().getProfile(userId="me").execute()


def test_call_counts_and_quota_units(control, alice, gmail):
    start = str(control.history_id(ALICE))
    message = control.insert_message(ALICE)
    alice.users().getProfile(userId="me").execute()
    alice.users().history().list(userId="me", startHistoryId=start).execute()
    alice.users().messages().list(userId="me").execute()
    alice.users().messages().get(userId="me", id=message["id"]).execute()
    alice.users().labels().list(userId="me").execute()
    alice.users().watch(userId="me", body={"topicName": "projects/sim-project/topics/t"}).execute()
    alice.users().stop(userId="me").execute()
    gmail.for_user(BOB).users().getProfile(userId="me").execute()
    counters = control.counters()
    assert counters["calls"][ALICE] == {"users.getProfile": 1, "users.history.list": 1, "users.messages.list": 1,
                                        "users.messages.get": 1, "users.labels.list": 1, "users.watch": 1,
                                        "users.stop": 1}
    assert counters["quotaUnits"][ALICE] == 1 + 2 + 5 + 5 + 1 + 100 + 50
    assert counters["calls"][BOB] == {"oauth2.token": 1, "users.getProfile": 1}
    assert counters["quotaUnits"][BOB] == 1
    assert counters["methods"]["users.getProfile"] == 2
    assert counters["totalQuotaUnits"] == 164 + 1
    control.reset_counters()
    assert control.counters()["totalCalls"] == 0


def test_fault_injected_calls_are_counted(control, alice):
    control.inject_fault("500", count=1)
    with pytest.raises(HttpError):
        alice.users().getProfile(userId="me").execute()
    assert control.counters()["calls"][ALICE]["users.getProfile"] == 1


# -- watch -------------------------------------------------------------------------------------------
def test_watch_returns_history_id_and_expiration_seven_days_ahead(control, alice):
    now_ms = control.now() * 1000
    response = alice.users().watch(userId="me", body={"topicName": "projects/sim-project/topics/t", "labelIds": ["INBOX"],
                                                      "labelFilterBehavior": "include"}).execute()
    assert response["historyId"] == str(control.history_id(ALICE))
    expiration = int(response["expiration"])
    assert abs(expiration - (now_ms + 7 * 24 * 3600 * 1000)) < 5000
    watch = control.mailbox(ALICE)["watch"]
    assert watch["labelIds"] == ["INBOX"] and watch["labelFilterBehavior"] == "INCLUDE"
    # One notification right away.
    assert [n["historyId"] for n in control.notifications(ALICE)] == [int(response["historyId"])]


@pytest.mark.parametrize("body", [
    {},
    {"topicName": "gmail-topic"},
    {"topicName": "projects/p/subscriptions/s"},
    {"topicName": "projects/sim-project/topics/t", "labelIds": ["NOPE"]},
    {"topicName": "projects/sim-project/topics/t", "labelFilterBehavior": "sometimes"},
    # Only the discovery document's spelling of the enum.
    {"topicName": "projects/sim-project/topics/t", "labelIds": ["INBOX"], "labelFilterBehavior": "INCLUDE"},
    {"topicName": "projects/sim-project/topics/t", "labelIds": ["INBOX"], "labelFilterAction": "EXCLUDE"},
    {"topicName": "projects/sim-project/topics/t", "labelFilterAction": "maybe"},
])
def test_watch_validation(alice, body):
    with pytest.raises(HttpError) as bad:
        alice.users().watch(userId="me", body=body).execute()
    assert bad.value.resp.status == 400


def test_watch_accepts_legacy_label_filter_action(control, alice):
    alice.users().watch(userId="me", body={"topicName": "projects/sim-project/topics/t", "labelIds": ["SPAM"],
                                           "labelFilterAction": "exclude"}).execute()
    assert control.mailbox(ALICE)["watch"]["labelFilterBehavior"] == "EXCLUDE"


def test_watch_expires_on_the_sim_clock(control, alice):
    alice.users().watch(userId="me", body={"topicName": "projects/sim-project/topics/t"}).execute()
    control.advance_clock(7 * 24 * 3600 + 1)
    control.insert_message(ALICE)
    assert control.mailbox(ALICE)["watch"]["expired"] is True
    assert len(control.notifications(ALICE)) == 1  # only the one sent by watch itself


def test_stop_ends_notifications(control, alice):
    alice.users().watch(userId="me", body={"topicName": "projects/sim-project/topics/t"}).execute()
    control.advance_clock(2)
    control.insert_message(ALICE)
    assert alice.users().stop(userId="me").execute() == ""  # 204 No Content, as Gmail
    control.advance_clock(2)
    control.insert_message(ALICE)
    assert len(control.notifications(ALICE)) == 2
    assert control.mailbox(ALICE)["watch"] is None


def test_notification_faults_drop_and_rate_limit(control, alice):
    alice.users().watch(userId="me", body={"topicName": "projects/sim-project/topics/t"}).execute()
    control.insert_message(ALICE)  # within the same simulated second: dropped by the 1/s limit
    control.set_notification_faults(drop_fraction=1.0)
    control.advance_clock(2)
    control.insert_message(ALICE)
    assert control.flush_notifications()  # the publisher thread has handled the queued one
    statuses = [n["status"] for n in control.notifications(ALICE)]
    assert statuses == ["unpublished", "dropped_rate_limit", "dropped_fault"]


# -- batch ---------------------------------------------------------------------------------------------
def test_batch_answers_each_part_as_gmail(control, alice):
    messages = control.insert_messages([{"emailAddress": ALICE, "subject": f"m{i}"} for i in range(3)])
    results = {}

    def collect(request_id, response, exception):
        results[request_id] = (response, exception)

    # new_batch_http_request() would post to gmail.googleapis.com (it ignores api_endpoint).
    assert alice.new_batch_http_request()._batch_uri.startswith("https://gmail.googleapis.com/")
    batch = BatchHttpRequest(callback=collect, batch_uri=control.batch_uri)
    for message in messages:
        batch.add(alice.users().messages().get(userId="me", id=message["id"], format="metadata"),
                  request_id=message["id"])
    batch.add(alice.users().messages().get(userId="me", id="0123456789abcdef"), request_id="missing")
    batch.add(alice.users().getProfile(userId=BOB), request_id="other-user")
    batch.execute()
    for message in messages:
        response, exception = results[message["id"]]
        assert exception is None and response["id"] == message["id"]
    assert results["missing"][1].resp.status == 404
    assert results["other-user"][1].resp.status == 403
    assert control.counters()["calls"][ALICE]["users.messages.get"] == 4


def test_batch_part_faults_are_per_part(control, alice):
    control.inject_fault("concurrentRequests", method="users.messages.list", count=1)
    results = {}
    batch = BatchHttpRequest(callback=lambda i, r, e: results.__setitem__(i, (r, e)),
                             batch_uri=control.url + "/batch")
    batch.add(alice.users().messages().list(userId="me"), request_id="a")
    batch.add(alice.users().messages().list(userId="me"), request_id="b")
    batch.execute()
    assert results["a"][1].resp.status == 429
    assert results["b"] == ({"resultSizeEstimate": 0}, None)


def test_per_user_quota_per_minute_locks_the_user_out(control, alice, gmail):
    control.configure(user_quota_units_per_minute=12)  # Gmail's is 6,000; 12 keeps the test short
    for _ in range(2):
        alice.users().messages().list(userId="me").execute()  # 5 units each
    alice.users().getProfile(userId="me").execute()  # 11
    now = control.now()
    with pytest.raises(HttpError) as limited:
        alice.users().messages().list(userId="me").execute()  # 16: over
    error = json.loads(limited.value.content)["error"]
    assert limited.value.resp.status == 403 and error["errors"][0]["reason"] == "userRateLimitExceeded"
    assert error["message"].startswith("User-rate limit exceeded.  Retry after ")
    until = control.faults()["lockouts"][ALICE]["until"]
    assert now < until <= now + 61
    gmail.for_user(BOB).users().getProfile(userId="me").execute()  # per user
    control.advance_clock(until - control.now() + 61)  # the lockout and the units in the window are past
    alice.users().messages().list(userId="me").execute()
    assert control.config()["userQuotaUnitsPerMinute"] == 12


def test_per_user_quota_defaults_to_6000_units_a_minute(control, alice):
    """Gmail's per-user limit for Cloud projects created since May 2026 (older ones keep 15,000)."""
    assert control.config()["userQuotaUnitsPerMinute"] == 6_000
    control.configure(project_quota_units_per_minute=None)  # only the per-user rule is under test
    control.advance_clock(61)  # the fixture's getProfile leaves the window
    for _ in range(120):
        alice.users().stop(userId="me").execute()  # 50 units each: 6,000
    with pytest.raises(HttpError) as limited:
        alice.users().getProfile(userId="me").execute()  # 6,001
    assert limited.value.resp.status == 403 and reason_of(limited.value) == "userRateLimitExceeded"


def test_notification_faults_per_mailbox(control, alice, gmail):
    bob = gmail.for_user(BOB)
    for service in (alice, bob):
        service.users().watch(userId="me", body={"topicName": "projects/sim-project/topics/t"}).execute()
    control.set_notification_faults(drop_fraction=1.0, email=ALICE)
    faults = control.set_notification_faults(delay_seconds=0.2, email=BOB)
    assert faults["byMailbox"] == {ALICE: {"dropFraction": 1.0}, BOB: {"delaySeconds": 0.2}}
    assert (faults["dropFraction"], faults["delaySeconds"]) == (0.0, 0.0)  # the global setting is untouched
    control.advance_clock(2)
    control.insert_messages([{"emailAddress": ALICE}, {"emailAddress": BOB}])
    assert control.flush_notifications()
    assert [n["status"] for n in control.notifications(ALICE)] == ["unpublished", "dropped_fault"]
    assert [n["status"] for n in control.notifications(BOB)] == ["unpublished", "unpublished"]
    # The mailbox's own setting wins over the global one, until cleared.
    control.set_notification_faults(drop_fraction=1.0)
    control.set_notification_faults(drop_fraction=0.0, email=BOB)
    control.advance_clock(2)
    control.insert_message(BOB)
    control.clear_notification_faults(BOB)
    control.advance_clock(2)
    control.insert_message(BOB)
    assert control.flush_notifications()
    assert [n["status"] for n in control.notifications(BOB)][2:] == ["unpublished", "dropped_fault"]
    with pytest.raises(SimulatorControlError) as unknown:
        control.set_notification_faults(drop_fraction=1.0, email="nobody@example.com")
    assert unknown.value.status == 404


def test_a_watch_made_to_lapse_and_its_renewal_refused(control, alice):
    watched = alice.users().watch(userId="me", body={"topicName": "projects/sim-project/topics/t"}).execute()
    control.refuse_watch(ALICE)
    with pytest.raises(HttpError) as refused:
        alice.users().watch(userId="me", body={"topicName": "projects/sim-project/topics/t"}).execute()
    assert refused.value.resp.status == 500 and reason_of(refused.value) == "backendError"
    assert control.mailbox(ALICE)["watch"]["expiration"] == int(watched["expiration"])  # the old watch stands
    info = control.expire_watch(ALICE)
    assert info["watch"]["expired"] is True and info["watch"]["expiration"] <= control.now() * 1000
    control.advance_clock(2)
    control.insert_message(ALICE)
    assert len(control.notifications(ALICE)) == 1  # only the watch's own: a lapsed watch notifies no one
    control.refuse_watch(ALICE, False)
    renewed = alice.users().watch(userId="me", body={"topicName": "projects/sim-project/topics/t"}).execute()
    assert int(renewed["expiration"]) > control.now() * 1000 and control.mailbox(ALICE)["watch"]["expired"] is False
