"""`mailwatch serve` and `mailwatch dev` run on the loop MAILWATCH_EVENT_LOOP names."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from mailwatch import event_loop
from mailwatch.config import ConfigError, Settings


async def _loop_of_this_coroutine(*args):
    return type(asyncio.get_running_loop()), event_loop.running_loop_kind(), args


def test_the_default_loop_is_uvloop():
    assert Settings.from_env({"MAILWATCH_DATABASE_URL": "postgresql://u@h/db"}).event_loop == "uvloop"
    loop_type, kind, args = event_loop.run("uvloop", _loop_of_this_coroutine, "passed")
    assert issubclass(loop_type, uvloop.Loop) and kind == "uvloop"
    assert args == ("passed",)


def test_asyncio_runs_on_the_standard_librarys_loop():
    loop_type, kind, _ = event_loop.run("asyncio", _loop_of_this_coroutine)
    assert not issubclass(loop_type, uvloop.Loop) and issubclass(loop_type, asyncio.BaseEventLoop)
    assert kind == "asyncio"


def test_uvloop_missing_is_a_configuration_error_naming_the_way_out(monkeypatch):
    """Where uvloop has no build (its requirement's marker leaves it out), the default says what to set."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    started = []

    async def main():
        started.append(True)

    with pytest.raises(ConfigError, match="set MAILWATCH_EVENT_LOOP=asyncio"):
        event_loop.run("uvloop", main)
    assert not started
