"""The LISTEN connection: every notification handed over, in order, also across its health checks."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from mailwatch.database_url import libpq_url
from mailwatch.store.listen import Listener
from tests.fixtures.waiting import eventually

from .conftest import terminate_backends

pytestmark = pytest.mark.integration


async def test_every_notification_arrives_in_order_while_health_checks_run_between_them(database_url):
    payloads: list[str] = []
    listener = Listener(database_url, "listen_test", on_payload=payloads.append, connect_timeout_seconds=10,
                        application_name="listen-test")
    await listener.open()
    checks = 0

    async def check_constantly():
        # The notifier's loop with no pause: the reader callback is off during each
        # check's statement, when psycopg reads the socket and hands notifications over.
        nonlocal checks
        while True:
            await listener.watch(timeout=0)
            await listener.check_alive()
            checks += 1

    checking = asyncio.create_task(check_constantly())
    try:
        async with await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True) as writer:
            for n in range(300):
                await writer.execute("SELECT pg_notify('listen_test', %s)", (str(n),))
        await eventually(lambda: len(payloads) >= 300, what="every notification handed over")
        assert payloads == [str(n) for n in range(300)]
        assert checks > 0
    finally:
        checking.cancel()
        await asyncio.gather(checking, return_exceptions=True)
        await listener.close()


async def test_a_lost_connection_fails_the_watch(database_url):
    listener = Listener(database_url, "listen_test", on_payload=lambda payload: None, connect_timeout_seconds=10,
                        application_name="listen-test-lost")
    await listener.open()
    try:
        watching = asyncio.ensure_future(listener.watch(timeout=60))
        assert terminate_backends(database_url, "listen-test-lost") == 1
        with pytest.raises(psycopg.OperationalError):
            await asyncio.wait_for(watching, 30)
    finally:
        await listener.close()
