"""Renewal timing (pure): spread over the day, daily afterwards, back to the slot after a late renewal."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

from mailwatch.lifecycle.schedule import MIN_GAP, RENEW_EVERY, next_renewal_at, renewal_key, renewal_slot

T0 = datetime(2026, 11, 25, 9, 41, 17, tzinfo=timezone.utc)
WEEK = timedelta(days=7)


def test_a_herd_registered_in_one_minute_renews_evenly_over_a_day():
    tenant = uuid.uuid4()
    rng = random.Random(5)
    registered = [T0 + timedelta(seconds=rng.uniform(0, 60)) for _ in range(10_000)]
    due = [
        next_renewal_at(at, at + WEEK, key=renewal_key(tenant, f"user{n}@example.com"))
        for n, at in enumerate(registered)
    ]
    assert all(at + MIN_GAP <= d < at + MIN_GAP + RENEW_EVERY for at, d in zip(registered, due))
    per_hour = Counter(int((d - T0 - MIN_GAP).total_seconds() // 3600) for d in due)
    assert set(per_hour) <= set(range(25))  # hour 24: the last registrations' last seconds
    # 10,000 over 24 hours is ~417 an hour; a uniform spread stays within ±20%.
    hourly = [per_hour[h] for h in range(24)]
    assert 417 * 0.8 < min(hourly) and max(hourly) < 417 * 1.2, per_hour


def test_later_renewals_are_a_day_apart_at_the_mailbox_slot():
    key = renewal_key(uuid.uuid4(), "daily@example.com")
    first = next_renewal_at(T0, T0 + WEEK, key=key)
    second = next_renewal_at(first, first + WEEK, key=key)
    third = next_renewal_at(second + timedelta(seconds=3), second + WEEK, key=key)  # the renewal took 3 s
    assert second - first == RENEW_EVERY
    assert third - second == RENEW_EVERY


def test_a_late_renewal_snaps_back_to_the_slot():
    key = renewal_key(uuid.uuid4(), "late@example.com")
    slot_time = next_renewal_at(T0, T0 + WEEK, key=key)
    # Failures delayed this renewal by five hours; the next one is at the slot again.
    late = slot_time + timedelta(hours=5)
    following = next_renewal_at(late, late + WEEK, key=key)
    assert (following - slot_time) % RENEW_EVERY == timedelta(0)
    assert MIN_GAP <= following - late < MIN_GAP + RENEW_EVERY


def test_slot_is_stable_and_differs_per_tenant():
    assert renewal_slot("a/x@example.com") == renewal_slot("a/x@example.com")
    assert renewal_key("t", " X@Example.com ") == renewal_key("t", "x@example.com")
    assert renewal_slot(renewal_key("t1", "x@example.com")) != renewal_slot(renewal_key("t2", "x@example.com"))
    assert timedelta(0) <= renewal_slot(None, rng=random.Random(1)) < RENEW_EVERY


def test_never_later_than_halfway_to_expiry():
    key = renewal_key("t", "short@example.com")
    assert next_renewal_at(T0, T0 + timedelta(hours=10), key=key) == T0 + timedelta(hours=5)
    assert next_renewal_at(T0, T0 - timedelta(seconds=1), key=key) == T0  # already expired: now


def test_without_a_key_the_first_renewal_is_still_within_the_window():
    rng = random.Random(3)
    dues = [next_renewal_at(T0, T0 + WEEK, rng=rng) for _ in range(1000)]
    assert all(T0 + MIN_GAP <= d < T0 + MIN_GAP + RENEW_EVERY for d in dues)
    assert max(dues) - min(dues) > timedelta(hours=23)
