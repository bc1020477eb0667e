"""UserCallLimiter: at most N calls in flight per user; idle users are forgotten."""

import asyncio

import pytest

from mailwatch.gmail.user_calls import UserCallLimiter
from tests.fixtures.waiting import eventually, stays


async def test_at_most_n_in_flight_per_user_and_users_are_independent():
    limiter = UserCallLimiter(2)
    in_flight = {"a@x.com": 0, "b@x.com": 0}
    peak = {"a@x.com": 0, "b@x.com": 0}
    release = asyncio.Event()

    async def call(user):
        async with limiter.slot(user):
            key = user.lower()
            in_flight[key] += 1
            peak[key] = max(peak[key], in_flight[key])
            await release.wait()
            in_flight[key] -= 1

    tasks = [asyncio.create_task(call(u)) for u in ["a@x.com", "A@x.com", "a@x.com", "b@x.com"]]
    await eventually(lambda: in_flight == {"a@x.com": 2, "b@x.com": 1})
    # The third call for a@ waits its turn: while no slot is released, it never gets in
    # (0.1 s is thousands of loop turns in which it could have).
    await stays(lambda: in_flight == {"a@x.com": 2, "b@x.com": 1}, 0.1, what="two calls per user")
    release.set()
    await asyncio.gather(*tasks)
    assert peak == {"a@x.com": 2, "b@x.com": 1}
    assert limiter.in_use() == 0  # nothing kept for idle users


def test_limit_must_be_positive():
    with pytest.raises(ValueError):
        UserCallLimiter(0)
