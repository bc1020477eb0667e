"""The event loop a long-running command (`mailwatch serve`, `mailwatch dev`) runs on.

`uvloop` (libuv, its loop machinery in C) or `asyncio` (the standard library's
selector loop in Python). Every stream message, psycopg round trip and
grpc completion-queue wake-up passes through the loop (a loop iteration, its
callbacks, the reader registered for the wait), and that bookkeeping is what
uvloop does in C. grpc.aio, psycopg's async connections, aiohttp and signal
handlers use only the loop's public API (add_reader, call_soon_threadsafe,
add_signal_handler), which both loops implement; grpc.aio wakes either loop
the same way, from its poller thread through a reader on the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from mailwatch.config import EVENT_LOOPS, ConfigError

T = TypeVar("T")


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes a loop of `kind` for asyncio.Runner (None: asyncio's default)."""
    if kind == "asyncio":
        return None
    if kind != "uvloop":
        raise ConfigError(f"the event loop must be {' or '.join(EVENT_LOOPS)}, got {kind!r}")
    try:
        import uvloop
    except ImportError:
        raise ConfigError(
            "MAILWATCH_EVENT_LOOP=uvloop needs the uvloop package, which has no build for this platform; "
            "set MAILWATCH_EVENT_LOOP=asyncio"
        ) from None
    return uvloop.new_event_loop


def run(kind: str, main: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    """`main(*args)` to completion on a new loop of `kind`, as asyncio.run would.

    The loop is chosen before the coroutine is made, so an unusable choice is a
    ConfigError, not a coroutine left never awaited."""
    factory = loop_factory(kind)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main(*args))


def running_loop_kind() -> str:
    """`uvloop` or `asyncio`: the loop this coroutine runs on, as start-up reports it."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
