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


async def test_a_batch_holds_one_slot_per_part_and_waits_its_turn():
    limiter = UserCallLimiter(3)
    order: list[str] = []
    release_single = asyncio.Event()
    release_batch = asyncio.Event()

    async def single(name, release):
        async with limiter.slot("a@x.com"):
            order.append(name)
            await release.wait()

    async def batch(parts, release):
        async with limiter.slots("a@x.com", parts):
            order.append(f"batch of {parts}")
            await release.wait()

    first = asyncio.create_task(single("first", release_single))
    await eventually(lambda: order == ["first"])
    # Three parts need all three slots: the batch waits for the one held...
    batched = asyncio.create_task(batch(3, release_batch))
    # ...and a call arriving after it waits behind it, though a slot is free for it now.
    late = asyncio.create_task(single("late", release_single))
    await stays(lambda: order == ["first"], 0.1, what="the batch waiting for its three slots, the late call behind it")
    release_single.set()
    await eventually(lambda: order == ["first", "batch of 3"])
    release_batch.set()
    await asyncio.gather(first, batched, late)
    assert order == ["first", "batch of 3", "late"]
    assert limiter.in_use() == 0


async def test_a_caller_cancelled_while_waiting_leaves_its_turn_to_the_next():
    limiter = UserCallLimiter(2)
    order: list[str] = []
    release = asyncio.Event()

    async def call(name, slots):
        async with limiter.slots("a@x.com", slots):
            order.append(name)
            await release.wait()

    first = asyncio.create_task(call("first", 1))
    await eventually(lambda: order == ["first"])
    batch = asyncio.create_task(call("batch", 2))  # needs both slots: waits for the first call
    late = asyncio.create_task(call("late", 1))  # arrived after the batch: waits behind it
    await stays(lambda: order == ["first"], 0.05, what="the batch waiting, the late call behind it")
    batch.cancel()
    # The batch gives up its turn: the late call fits beside the first one at once.
    await eventually(lambda: order == ["first", "late"])
    release.set()
    await asyncio.gather(first, late)
    with pytest.raises(asyncio.CancelledError):
        await batch
    assert limiter.in_use() == 0


async def test_a_caller_granted_its_slots_as_it_is_cancelled_gives_them_back():
    limiter = UserCallLimiter(1)
    entered: list[str] = []

    async def waiter(name):
        async with limiter.slot("a@x.com"):
            entered.append(name)

    held = limiter.slot("a@x.com")
    await held.__aenter__()
    second = asyncio.create_task(waiter("second"))
    third = asyncio.create_task(waiter("third"))
    await stays(lambda: not entered, 0.05, what="both waiting for the one slot")
    # The slot passes to the second caller, which is cancelled before it runs again
    # (no await in between): it must hand the slot on, not keep it.
    await held.__aexit__(None, None, None)
    second.cancel()
    await asyncio.gather(second, third, return_exceptions=True)
    assert second.cancelled()
    assert entered == ["third"]
    assert limiter.in_use() == 0
