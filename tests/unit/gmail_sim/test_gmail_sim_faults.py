"""Fault selection and the notification rate limit."""

import pytest

from mailwatch_devstack.gmail_sim.faults import FaultInjector, fault_error
from mailwatch_devstack.gmail_sim.ratelimit import NotificationRateLimiter


def test_next_n_calls_of_one_method():
    faults = FaultInjector()
    faults.add("429", method="users.history.list", count=2, retry_after=7)
    assert faults.pick("users.messages.get", "a@x.com") is None
    first = faults.pick("users.history.list", "a@x.com")
    assert first.kind == "rateLimitExceeded" and first.retry_after == 7
    assert faults.pick("users.history.list", "a@x.com") is not None
    assert faults.pick("users.history.list", "a@x.com") is None
    assert faults.rules() == []


def test_user_scoped_rule():
    faults = FaultInjector()
    faults.add("500", user="A@x.com")
    assert faults.pick("users.getProfile", "b@x.com") is None
    assert faults.pick("users.getProfile", "a@x.com").kind == "backendError"


def test_fraction_is_roughly_respected_and_reproducible():
    def run():
        faults = FaultInjector(seed=42)
        faults.add("403", fraction=0.25)
        return [faults.pick("users.getProfile", "a@x.com") is not None for _ in range(4000)]

    hits = run()
    assert 800 < sum(hits) < 1200
    assert hits == run()


def test_first_matching_rule_wins():
    faults = FaultInjector()
    faults.add("500", method="users.watch")
    faults.add("429")
    assert faults.pick("users.watch", None).kind == "backendError"
    assert faults.pick("users.stop", None).kind == "rateLimitExceeded"


@pytest.mark.parametrize("kwargs", [{"kind": "teapot"}, {"kind": "429", "fraction": 1.5},
                                    {"kind": "429", "count": 0}, {"kind": "429", "retry_after": -1}])
def test_invalid_rules_rejected(kwargs):
    with pytest.raises(ValueError):
        FaultInjector().add(**kwargs)


def test_fault_errors_are_gmail_shaped():
    faults = FaultInjector()
    rule = faults.add("403", retry_after=3)
    error = fault_error(rule, now=0.0)
    body = error.body()["error"]
    assert error.code == 403 and error.headers == {}  # no Retry-After: the time is in the message
    assert body["errors"][0]["reason"] == "userRateLimitExceeded"
    assert body["errors"][0]["domain"] == "usageLimits"
    assert body["status"] == "RESOURCE_EXHAUSTED"
    assert body["message"] == "User-rate limit exceeded.  Retry after 1970-01-01T00:00:03.000Z"
    assert fault_error(faults.add("429"), 0.0).code == 429
    assert fault_error(faults.add("429"), 0.0).body()["error"]["message"].endswith("1970-01-01T00:15:00.000Z")
    assert fault_error(faults.add("concurrentRequests"), 0.0).body()["error"]["message"] == (
        "Too many concurrent requests for user.")
    assert fault_error(faults.add("500"), 0.0).body()["error"]["status"] == "INTERNAL"


def test_a_rate_limit_locks_the_user_out_until_its_retry_time():
    faults = FaultInjector()
    faults.add("429", method="users.history.list", user="a@x.com", count=1, retry_after=60)
    assert faults.answer("users.getProfile", "a@x.com", 100.0) is None
    first = faults.answer("users.history.list", "a@x.com", 100.0)
    assert first.code == 429
    # Every method, same answer, until the retry time; other users are unaffected.
    assert faults.answer("users.getProfile", "A@x.com", 159.9).body() == first.body()
    assert faults.answer("users.getProfile", "b@x.com", 120.0) is None
    assert faults.answer("users.getProfile", "a@x.com", 160.0) is None
    assert faults.lockouts(160.0) == {}


def test_concurrency_limiter_refuses_past_the_cap_and_keeps_the_peak():
    from mailwatch_devstack.gmail_sim.concurrency import ConcurrencyLimiter
    from mailwatch_devstack.gmail_sim.errors import GmailError

    limiter = ConcurrencyLimiter(limit=2)
    with limiter.slot("a@x.com"), limiter.slot("A@x.com"):
        with limiter.slot("b@x.com"):
            pass
        with pytest.raises(GmailError) as refused:
            with limiter.slot("a@x.com"):
                pass
        assert refused.value.code == 429 and refused.value.reason == "rateLimitExceeded"
    with limiter.slot("a@x.com"):
        pass
    assert limiter.peaks() == {"a@x.com": 2, "b@x.com": 1}
    limiter.set_limit(None)
    with limiter.slot("a@x.com"), limiter.slot("a@x.com"), limiter.slot("a@x.com"):
        pass
    with pytest.raises(ValueError):
        limiter.set_limit(0)


def test_notification_drop_fraction():
    faults = FaultInjector(seed=1)
    assert not faults.drop_notification()
    faults.set_notification_faults(drop_fraction=1.0)
    assert faults.drop_notification()
    faults.set_notification_faults(drop_fraction=0.5)
    drops = sum(faults.drop_notification() for _ in range(2000))
    assert 850 < drops < 1150
    with pytest.raises(ValueError):
        faults.set_notification_faults(delay_seconds=-1)


def test_rate_limiter_one_per_second_per_user():
    limiter = NotificationRateLimiter()
    assert limiter.allow("a@x.com", 100.0)
    assert not limiter.allow("A@x.com", 100.5)  # same user, case-insensitive
    assert limiter.allow("b@x.com", 100.5)  # other users are independent
    assert not limiter.allow("a@x.com", 100.99)
    assert limiter.allow("a@x.com", 101.0)
    limiter.reset()
    assert limiter.allow("a@x.com", 101.1)


def test_user_quota_sliding_minute():
    from mailwatch_devstack.gmail_sim.unit_quota import UnitQuota

    quota = UnitQuota("userQuotaUnitsPerMinute", 10)
    assert quota.charge("a@x.com", 5, 100.0) is None
    assert quota.charge("A@x.com", 5, 110.0) is None
    assert quota.charge("b@x.com", 10, 110.0) is None  # other users have their own minute
    # Over: allowed again once the first 5 units leave the window (at 160).
    assert quota.charge("a@x.com", 1, 120.0) == 160.0
    assert quota.charge("a@x.com", 1, 161.0) is None
    quota.set_limit(None)
    assert quota.charge("a@x.com", 10_000, 162.0) is None
    with pytest.raises(ValueError):
        quota.set_limit(0)


def test_project_quota_keeps_a_running_total_of_its_window():
    from mailwatch_devstack.gmail_sim.unit_quota import UnitQuota

    quota = UnitQuota("projectQuotaUnitsPerMinute", 1_000)
    for n in range(1_000):  # one unit every 0.1 s: 600 units a minute at most
        assert quota.charge("proj-a", 1, 100.0 + n / 10) is None
    assert quota.charge("proj-b", 1_000, 200.0) is None  # each project has its own minute
    assert quota.charge("proj-b", 1, 200.0) == 260.0
    quota.set_limit(5)
    quota.reset()
    assert quota.units_per_minute == 1_000 and quota.charge("proj-b", 1_000, 201.0) is None


def test_project_numbers_are_stable_twelve_digit_numbers():
    from mailwatch_devstack.gmail_sim.auth import project_number

    assert project_number("sim-project") == project_number("sim-project")
    assert project_number("sim-project") != project_number("other-project")
    assert len(str(project_number("sim-project"))) == 12
