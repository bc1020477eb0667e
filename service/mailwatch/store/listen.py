"""The LISTEN side of LISTEN/NOTIFY: one dedicated connection on a channel.

The connection is a plain psycopg 3 `AsyncConnection` in autocommit mode, not
one borrowed from the SQLAlchemy pool: it is held for as long as its owner
listens and must never be handed to a transaction. Keepalives make a silently
dead peer (e.g. a failover) noticed within about a minute; `check_alive`
proves a quiet connection is still there. The NOTIFY side is in the writers'
statements (`store.changes`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
from psycopg import sql

from mailwatch.database_url import libpq_url


class Listener:
    """LISTENs on `channel` once `open` returns; `payloads` yields what is notified."""

    def __init__(self, url: str, channel: str, *, connect_timeout_seconds: float, application_name: str) -> None:
        self._conninfo = libpq_url(url)
        self.channel = channel
        self._connect_timeout = max(1, int(connect_timeout_seconds))
        self._application_name = application_name
        self._conn: psycopg.AsyncConnection | None = None

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
        await self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))

    async def payloads(self, *, timeout: float) -> AsyncIterator[str]:
        """The payloads notified until `timeout` seconds pass (raises if the connection is lost)."""
        assert self._conn is not None, "open() first"
        async for notify in self._conn.notifies(timeout=timeout):
            yield notify.payload

    async def check_alive(self) -> None:
        """One round trip; raises if the connection is gone."""
        assert self._conn is not None, "open() first"
        await self._conn.execute("SELECT 1")

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone either way
                pass
