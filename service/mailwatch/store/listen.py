"""The LISTEN side of LISTEN/NOTIFY: one dedicated connection on a channel.

The connection is a plain psycopg 3 `AsyncConnection` in autocommit mode, not
one borrowed from the SQLAlchemy pool: it is held for as long as its owner
listens and must never be handed to a transaction. Keepalives make a silently
dead peer (e.g. a failover) noticed within about a minute; `check_alive`
proves a quiet connection is still there. The NOTIFY side is in the writers'
statements (`store.changes`).

Every commit of every tenant arrives here, so a notification is handed over
from an event-loop reader callback on the connection's socket: libpq reads
what arrived (`consume_input`) and each notification goes, through psycopg's
own notify handler, straight to `on_payload`. psycopg's `notifies()` generator
would instead wrap every notification in a wait of its own (a reader added and
removed, a future, a timer, two async-generator steps and a task wake-up)
before the owner even sees it. While `check_alive` runs a statement the
callback is off (psycopg reads the socket then, and hands any notification it
finds to the same handler).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
from psycopg import sql

from mailwatch.database_url import libpq_url


class Listener:
    """LISTENs on `channel` once `open` returns, and calls `on_payload` with the
    payload of each notification as it arrives (in the event loop, in order)."""

    def __init__(self, url: str, channel: str, *, on_payload: Callable[[str], None],
                 connect_timeout_seconds: float, application_name: str) -> None:
        self._conninfo = libpq_url(url)
        self.channel = channel
        self._on_payload = on_payload
        self._connect_timeout = max(1, int(connect_timeout_seconds))
        self._application_name = application_name
        self._conn: psycopg.AsyncConnection | None = None
        self._lost: asyncio.Future[None] | None = None  # fails when the connection does
        self._watched: int | None = None  # the socket the reader callback is on

    async def open(self) -> None:
        self._conn = await psycopg.AsyncConnection.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=self._connect_timeout,
            application_name=self._application_name,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        self._lost = asyncio.get_running_loop().create_future()
        self._conn.add_notify_handler(self._notified)
        await self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        self._watch()

    async def watch(self, *, timeout: float) -> None:
        """Deliver notifications for `timeout` seconds; raises at once if the connection is lost meanwhile."""
        assert self._lost is not None, "open() first"
        if not self._lost.done():
            await asyncio.wait((self._lost,), timeout=timeout)
        if self._lost.done():
            self._lost.result()

    async def check_alive(self) -> None:
        """One round trip; raises if the connection is gone."""
        assert self._conn is not None, "open() first"
        self._unwatch()  # psycopg reads the socket during the statement
        await self._conn.execute("SELECT 1")
        self._watch()

    async def close(self) -> None:
        self._unwatch()
        conn, self._conn = self._conn, None
        if self._lost is not None and not self._lost.done():
            self._lost.cancel()
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone either way
                pass

    # --- the reader callback ------------------------------------------------------

    def _watch(self) -> None:
        assert self._conn is not None
        self._watched = self._conn.pgconn.socket
        asyncio.get_running_loop().add_reader(self._watched, self._readable)
        # What libpq read while nobody watched (with the last statement's answer) is
        # already handed over; anything still unread would not wake the reader.
        self._readable()

    def _unwatch(self) -> None:
        if self._watched is not None:
            asyncio.get_running_loop().remove_reader(self._watched)
            self._watched = None

    def _readable(self) -> None:
        conn = self._conn
        if conn is None or self._watched is None:
            return
        pgconn = conn.pgconn
        try:
            pgconn.consume_input()
        except psycopg.OperationalError as exc:
            self._unwatch()
            if self._lost is not None and not self._lost.done():
                self._lost.set_exception(exc)
            return
        handler = pgconn.notify_handler  # psycopg's: builds the Notify, calls `_notified`
        while (notify := pgconn.notifies()) is not None:
            if handler is not None:
                handler(notify)

    def _notified(self, notify: psycopg.Notify) -> None:
        self._on_payload(notify.payload)
