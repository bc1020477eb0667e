import random
from datetime import datetime, timedelta, timezone

from mailwatch.domain.backoff import BackoffPolicy


def test_delay_grows_exponentially_within_jitter_bounds():
    policy = BackoffPolicy(base_seconds=1, max_seconds=1000)
    rng = random.Random(7)
    for attempt in range(1, 8):
        ceiling = 2 ** (attempt - 1)
        for _ in range(50):
            assert ceiling / 2 <= policy.delay(attempt, rng=rng) <= ceiling


def test_delay_is_capped():
    policy = BackoffPolicy(base_seconds=1, max_seconds=30)
    assert all(policy.delay(40, rng=random.Random(i)) <= 30 for i in range(20))


def test_retry_after_is_a_floor():
    policy = BackoffPolicy(base_seconds=1, max_seconds=30)
    assert policy.delay(1, retry_after=120, rng=random.Random(1)) == 120
    assert policy.delay(6, retry_after=0.5, rng=random.Random(1)) >= 16


def test_jitter_spreads_many_mailboxes():
    policy = BackoffPolicy(base_seconds=10, max_seconds=600)
    delays = {round(policy.delay(3, rng=random.Random(i)), 3) for i in range(100)}
    assert len(delays) > 90


def test_next_attempt_at_is_in_the_future():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    at = BackoffPolicy().next_attempt_at(now, 1)
    assert now < at <= now + timedelta(seconds=2)
