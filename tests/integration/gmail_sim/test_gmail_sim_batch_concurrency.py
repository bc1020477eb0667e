"""A batch is many requests at once, as at Gmail: its parts count against the per-user
concurrency cap one by one, and the ones past it are refused one by one inside a 200 batch."""

from __future__ import annotations

import json

import pytest
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from tests.integration.gmail_sim.support import ALICE, BOB

pytestmark = pytest.mark.integration

TOO_MANY = {"code": 429, "message": "Too many concurrent requests for user.",
            "errors": [{"message": "Too many concurrent requests for user.", "domain": "global",
                        "reason": "rateLimitExceeded"}],
            "status": "RESOURCE_EXHAUSTED"}


@pytest.fixture
def services(control, gmail):
    control.create_mailboxes([ALICE, BOB])
    alice, bob = gmail.for_user(ALICE), gmail.for_user(BOB)
    for service in (alice, bob):
        service.users().getProfile(userId="me").execute()  # tokens fetched outside the batches
    control.configure(batch_parts_concurrent=True)  # Gmail's way (off by default for now: see state.py)
    control.reset_counters()
    return alice, bob


def run_batch(control, requests) -> dict:
    """Send (request_id, request) pairs as one batch; {request_id: (response, HttpError or None)}."""
    results = {}
    batch = BatchHttpRequest(callback=lambda i, r, e: results.__setitem__(i, (r, e)), batch_uri=control.batch_uri)
    for request_id, request in requests:
        batch.add(request, request_id=request_id)
    batch.execute()  # the batch itself answers 200: no exception here
    return results


def test_parts_past_the_users_concurrency_cap_are_refused_one_by_one(control, services):
    alice, _ = services
    assert control.config()["concurrentRequestsPerUser"] == 10
    results = run_batch(control, [(str(i), alice.users().getProfile(userId="me")) for i in range(25)])
    answered = [i for i in range(25) if results[str(i)][1] is None]
    refused = [i for i in range(25) if results[str(i)][1] is not None]
    assert answered == list(range(10)) and refused == list(range(10, 25))
    for i in refused:
        error = results[str(i)][1]
        assert isinstance(error, HttpError) and error.resp.status == 429
        assert json.loads(error.content)["error"] == TOO_MANY
    counters = control.counters()
    # Each part is a request of its own: all 25 counted and charged, 10 in flight at once.
    assert counters["calls"][ALICE]["users.getProfile"] == 25 and counters["quotaUnits"][ALICE] == 25
    assert counters["peakConcurrentRequests"][ALICE] == 10 and counters["batches"]["sizes"] == [25]
    # The slots are given back when the batch is answered.
    assert alice.users().getProfile(userId="me").execute()["emailAddress"] == ALICE


def test_the_cap_is_per_user_within_one_batch(control, services):
    alice, bob = services
    parts = [(f"{who}{i}", service.users().messages().list(userId="me"))
             for i in range(12) for who, service in (("a", alice), ("b", bob))]
    results = run_batch(control, parts)
    for who in ("a", "b"):
        statuses = [200 if results[f"{who}{i}"][1] is None else results[f"{who}{i}"][1].resp.status
                    for i in range(12)]
        assert statuses == [200] * 10 + [429] * 2
    assert control.counters()["peakConcurrentRequests"] == {ALICE: 10, BOB: 10}


def test_small_batches_run_their_parts_together(control, services):
    alice, _ = services
    control.add_latency("users.messages.get", 0.05, user=ALICE)
    messages = control.insert_messages([{"emailAddress": ALICE} for _ in range(5)])
    results = run_batch(control, [(m["id"], alice.users().messages().get(userId="me", id=m["id"], format="minimal"))
                                  for m in messages])
    assert all(results[m["id"]][1] is None and results[m["id"]][0]["id"] == m["id"] for m in messages)
    assert control.counters()["peakConcurrentRequests"][ALICE] == 5


def test_the_cap_setting_applies_to_batch_parts(control, services):
    alice, _ = services
    control.configure(concurrent_requests_per_user=3)
    results = run_batch(control, [(str(i), alice.users().getProfile(userId="me")) for i in range(4)])
    assert [results[str(i)][1] is None for i in range(4)] == [True, True, True, False]


def test_one_part_at_a_time_is_a_setting(control, services):
    alice, _ = services
    assert control.configure(batch_parts_concurrent=False)["batchPartsConcurrent"] is False
    results = run_batch(control, [(str(i), alice.users().getProfile(userId="me")) for i in range(25)])
    assert all(error is None for _, error in results.values())
    assert control.counters()["peakConcurrentRequests"][ALICE] == 1


def test_over_100_parts_is_refused_with_googles_text(control, services):
    alice, _ = services
    batch = BatchHttpRequest(batch_uri=control.batch_uri)
    for i in range(101):
        batch.add(alice.users().getProfile(userId="me"), request_id=str(i))
    with pytest.raises(HttpError) as refused:
        batch.execute()
    assert refused.value.resp.status == 400
    assert json.loads(refused.value.content) == {"error": {
        "code": 400, "message": "Inner request count exceeds the limit. Received: 101, Limit: 100",
        "status": "INVALID_ARGUMENT"}}
    assert control.counters()["calls"] == {}  # nothing inside it ran
