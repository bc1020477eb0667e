"""The engine's own settings, against a real Postgres."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

pytestmark = pytest.mark.integration


async def test_a_database_error_does_not_carry_its_statements_parameters(engine):
    # Unexpected errors are logged with their text; the parameters of mailwatch's
    # statements include sealed credentials and mailbox addresses.
    secret = "sealed-credential-7f3a"
    async with engine.connect() as connection:
        with pytest.raises(DBAPIError) as caught:
            await connection.execute(text("SELECT CAST(:value AS text), 1 / 0"), {"value": secret})
    assert "division by zero" in str(caught.value)
    assert secret not in str(caught.value)


async def _backend_pid(engine) -> int:
    async with engine.connect() as connection:
        return (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()


async def _terminate(engine, pid: int) -> None:
    # From a connection of its own (a fresh one: the pooled one is the victim).
    import psycopg

    url = engine.url.set(drivername="postgresql")
    async with await psycopg.AsyncConnection.connect(url.render_as_string(hide_password=False),
                                                     autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def test_a_pooled_connection_dropped_while_idle_is_replaced_before_use(engine, monkeypatch):
    from mailwatch.store import db

    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # every returned connection counts as idle
    victim = await _backend_pid(engine)
    await _terminate(engine, victim)
    # The pool hands out its most recently returned connection (LIFO): the dead one,
    # pinged first, replaced, and the statement runs on a new backend without an error.
    assert await _backend_pid(engine) != victim


async def test_a_connection_back_in_the_pool_a_moment_ago_is_not_pinged(engine, monkeypatch):
    from mailwatch.store import db
    from mailwatch.store._errors import is_database_unavailable

    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    victim = await _backend_pid(engine)
    await _terminate(engine, victim)
    # No ping: the statement meets the dead connection, fails as "database unavailable"
    # (what callers map to UNAVAILABLE / retry) and invalidates the pool...
    with pytest.raises(DBAPIError) as caught:
        await _backend_pid(engine)
    assert is_database_unavailable(caught.value)
    # ... so the next checkout gets a new connection.
    assert await _backend_pid(engine) != victim
