"""throttled_log: one line per key per interval, the next one saying how many were held back."""

from __future__ import annotations

import logging

from mailwatch.throttled_log import ThrottledLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_logged_once_per_interval_and_the_next_line_counts_the_ones_between(caplog):
    clock = Clock()
    throttled = ThrottledLog(logging.getLogger("test.throttled"), interval=60.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        assert throttled.log(("t1", "RPC_RATE_LIMITED"), "t1 refused")
        for _ in range(499):  # a client looping on its refusal
            clock.now += 0.1
            assert not throttled.log(("t1", "RPC_RATE_LIMITED"), "t1 refused")
        assert throttled.log(("t2", "RPC_RATE_LIMITED"), "t2 refused")  # another key: its own line
        assert [r.getMessage() for r in caplog.records] == ["t1 refused", "t2 refused"]

        clock.now += 20.0  # 69.9 s after t1's line
        assert throttled.log(("t1", "RPC_RATE_LIMITED"), "t1 refused")
        assert caplog.records[-1].getMessage() == "t1 refused (500 such in the last 70 s; one line per 60 s)"
        assert caplog.records[-1].levelno == logging.WARNING
        clock.now += 61.0  # one more after a quiet interval: logged as it is
        assert throttled.log(("t1", "RPC_RATE_LIMITED"), "t1 refused")
        assert caplog.records[-1].getMessage() == "t1 refused"
    assert len(caplog.records) == 4


def test_keys_beyond_the_most_recent_are_forgotten_and_logged_at_once_again(caplog):
    clock = Clock()
    throttled = ThrottledLog(logging.getLogger("test.throttled"), max_keys=2, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        for key in ("a", "b", "c", "a"):
            assert throttled.log(key, key)
        assert not throttled.log("c", "c")
    assert [r.getMessage() for r in caplog.records] == ["a", "b", "c", "a"]
