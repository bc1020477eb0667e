"""The shape every background worker shares: tick, sleep, repeat.

A worker's `tick()` does one bounded unit of work and says whether more is
waiting right now; `run()` ticks again at once when it is, and otherwise
sleeps `loop_seconds` or until `wake()`. A failing tick is logged and retried
on the next round: a database hiccup never ends a worker.
"""

from __future__ import annotations

import asyncio
import logging

from mailwatch.store._errors import is_database_unavailable

log = logging.getLogger(__name__)


class LoopWorker:
    def __init__(self, *, enabled: bool = True, loop_seconds: float = 1.0) -> None:
        self.enabled = enabled
        self.loop_seconds = loop_seconds
        self._wake = asyncio.Event()
        self._stopping = False
        #: How many times the worker has gone to sleep (an observable state: tests wait on it).
        self.sleeps = 0

    async def tick(self) -> bool:
        """One unit of work; True when more is waiting (tick again without sleeping)."""
        raise NotImplementedError

    def wake(self) -> None:
        """New work appeared: tick now rather than at the next round."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def run(self) -> None:
        if not self.enabled:
            return
        while not self._stopping:
            try:
                busy = await self.tick()
            except Exception as exc:  # noqa: BLE001 - logged; the next round retries
                log_failure(f"{type(self).__name__} tick", exc)
                busy = False
            if busy or self._stopping:
                continue
            self.sleeps += 1
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.loop_seconds)
            except TimeoutError:
                pass
            self._wake.clear()


def log_failure(what: str, exc: BaseException) -> None:
    """A worker's failed step, logged: a database outage (expected during a Postgres
    restart) as one line without traceback, anything else with its traceback."""
    if is_database_unavailable(exc):
        log.warning("%s failed: database unavailable (%s)", what, exc)
    else:
        log.error("%s failed", what, exc_info=exc)
