"""Wake-ups for change streams: one LISTEN connection per process.

`append_events` queues `NOTIFY mailwatch_changes, '<tenant_id>'` in the
writer's transaction, so every replica hears about a commit as soon as it
happens. A notification is only a wake-up: streams always re-read the log
from their own position, and also re-read on a timer, so a notification lost
while the connection was down costs latency, never data (procrastinate's rule).

The connection is the store's (`store.listen.Listener`: a dedicated one,
outside the pool, held for the life of the process). If it drops, the notifier reconnects
with exponential backoff; meanwhile `connected` is False and the streamer polls
faster. On every (re)connect all waiters are woken, because commits made while
nobody was listening announced themselves to no one.

Waking is per tenant and needs no bookkeeping per stream: a tenant's waiters
(in practice its one shared reader per process, `streams.feed`) are released
all at once by its next notification; a generation number (`token`) closes the
gap between a reader's read and its wait, so a notification that lands in
between is not slept through.

Every commit of every tenant passes through here, so the hand-over is direct:
the listener calls `_on_notify` from its socket's reader callback, which
releases each waiter's bare future (a wait is that future and its timeout's
timer: `asyncio.wait_for` would also wrap every wait in a task of its own).
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid

from prometheus_client import Counter, Gauge

from mailwatch.store.changes import CHANGES_CHANNEL
from mailwatch.store.listen import Listener

log = logging.getLogger(__name__)

NOTIFICATIONS = Counter("mailwatch_change_notifications_total", "NOTIFYs received on the change channel")
LISTEN_CONNECTS = Counter("mailwatch_change_listen_connects_total", "LISTEN connections established")
LISTENING = Gauge("mailwatch_change_listening", "1 while this process LISTENs for change notifications")

# Bound on the payload -> tenant id cache (a process serves far fewer tenants).
_TENANT_IDS_KEPT = 10_000


class ChangeNotifier:
    """Per-process LISTENer that wakes the streams of the tenant named in each notification."""

    def __init__(
        self,
        url: str,
        *,
        channel: str = CHANGES_CHANNEL,
        reconnect_min_seconds: float = 0.5,
        reconnect_max_seconds: float = 30.0,
        health_check_seconds: float = 30.0,
        connect_timeout_seconds: float = 10.0,
        application_name: str = "mailwatch-listen",
    ) -> None:
        self.channel = channel
        self.reconnect_min_seconds = reconnect_min_seconds
        self.reconnect_max_seconds = reconnect_max_seconds
        self.health_check_seconds = health_check_seconds
        self.connect_timeout_seconds = connect_timeout_seconds
        self.application_name = application_name
        self._listener = Listener(url, channel, on_payload=self._on_notify,
                                  connect_timeout_seconds=connect_timeout_seconds, application_name=application_name)
        self._task: asyncio.Task | None = None
        self._connected = asyncio.Event()
        # Generations: `_counter` counts wake-ups; a tenant's token is the
        # counter value of its latest wake-up (or of the latest wake-all).
        self._counter = 0
        self._tenant_generation: dict[uuid.UUID, int] = {}
        self._all_generation = 0
        self._waiters: dict[uuid.UUID, list[asyncio.Future[bool]]] = {}
        # Payload -> tenant id: parsing the same few tenants' ids on every commit costs more than the lookup.
        self._tenant_ids: dict[str, uuid.UUID] = {}
        self._failures = 0

    # --- lifecycle -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while LISTEN is established (notifications are being received)."""
        return self._connected.is_set()

    async def start(self, *, wait_connected: float | None = None) -> None:
        """Start listening in the background. With `wait_connected`, wait up to
        that many seconds for the first connection (not an error if it fails:
        the notifier keeps retrying and streams poll meanwhile)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="mailwatch-change-notifier")
        if wait_connected:
            try:
                await asyncio.wait_for(self._connected.wait(), wait_connected)
            except TimeoutError:
                log.warning("change notifier not connected after %.1fs; streams poll until it is", wait_connected)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self._close_connection()
        self._set_disconnected()
        self._wake_all()  # waiters return at once and fall back to their timers

    # --- waiting ---------------------------------------------------------------

    def token(self, tenant_id: uuid.UUID) -> int:
        """The tenant's current generation: take it *before* reading the log and
        pass it to `wait`, which then returns at once if a wake-up came in between."""
        return max(self._tenant_generation.get(tenant_id, 0), self._all_generation)

    async def wait(self, tenant_id: uuid.UUID, timeout: float, *, token: int | None = None) -> bool:
        """Wait up to `timeout` seconds for a notification for the tenant. True if woken."""
        if token is not None and self.token(tenant_id) != token:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        waiters = self._waiters.get(tenant_id)
        if waiters is None:
            waiters = self._waiters[tenant_id] = []
        waiters.append(waiter)
        timer = loop.call_later(max(timeout, 0.0), _release, waiter, False)
        try:
            return await waiter
        finally:
            timer.cancel()
            if waiter.cancelled() or not waiter.result():
                # Timed out or cancelled: not released by `_wake`, so still on the tenant's list.
                _discard(self._waiters, tenant_id, waiter)

    def notify_local(self, tenant_id: uuid.UUID) -> None:
        """Wake the tenant's streams as a notification would (tests; in-process writers)."""
        self._wake(tenant_id)

    def _wake(self, tenant_id: uuid.UUID) -> None:
        self._counter += 1
        self._tenant_generation[tenant_id] = self._counter
        waiters = self._waiters.pop(tenant_id, None)
        if waiters is not None:
            for waiter in waiters:
                _release(waiter, True)

    def _wake_all(self) -> None:
        self._counter += 1
        self._all_generation = self._counter
        every, self._waiters = self._waiters, {}
        for waiters in every.values():
            for waiter in waiters:
                _release(waiter, True)

    # --- the connection loop -----------------------------------------------------

    def _set_connected(self) -> None:
        self._connected.set()
        LISTENING.set(1)

    def _set_disconnected(self) -> None:
        self._connected.clear()
        LISTENING.set(0)

    async def _run(self) -> None:
        self._failures = 0
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: drop the connection and retry
                self._failures += 1
                level = logging.WARNING if self._failures <= 3 else logging.DEBUG
                log.log(level, "change notifier connection failed (%s: %s); retrying", type(exc).__name__, exc)
            finally:
                was_connected = self.connected
                self._set_disconnected()
                await self._close_connection()
                if was_connected:
                    self._wake_all()  # streams re-read now and poll faster until we are back
            delay = min(self.reconnect_max_seconds, self.reconnect_min_seconds * 2 ** max(self._failures - 1, 0))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _listen(self) -> None:
        listener = self._listener
        await listener.open()
        LISTEN_CONNECTS.inc()
        self._failures = 0
        self._set_connected()
        # Anything committed before LISTEN took effect was announced to no one.
        self._wake_all()
        log.info("listening for change notifications on %r", self.channel)
        while True:
            # Notifications are handed to `_on_notify` meanwhile; raises if the connection is lost.
            await listener.watch(timeout=self.health_check_seconds)
            # Every while: prove the connection is alive (raises if not).
            await listener.check_alive()

    def _on_notify(self, payload: str) -> None:
        NOTIFICATIONS.inc()
        tenant_id = self._tenant_ids.get(payload)
        if tenant_id is None:
            try:
                tenant_id = uuid.UUID(payload)
            except ValueError:
                log.debug("ignoring change notification with payload %r", payload[:80])
                return
            if len(self._tenant_ids) >= _TENANT_IDS_KEPT:
                self._tenant_ids.clear()
            self._tenant_ids[payload] = tenant_id
        self._wake(tenant_id)

    async def _close_connection(self) -> None:
        await self._listener.close()


def _release(waiter: asyncio.Future[bool], woken: bool) -> None:
    if not waiter.done():
        waiter.set_result(woken)


def _discard(waiters: dict[uuid.UUID, list[asyncio.Future[bool]]], tenant_id: uuid.UUID,
             waiter: asyncio.Future[bool]) -> None:
    listed = waiters.get(tenant_id)
    if listed is not None and waiter in listed:
        listed.remove(waiter)
        if not listed:
            del waiters[tenant_id]
