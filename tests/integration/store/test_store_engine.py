"""The engine's own settings, against a real Postgres."""

from __future__ import annotations

import asyncio
import gc
import warnings

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


# The driver pool (Engine.driver_connection): the hot path's autocommit connections.


async def _terminated(engine, pid: int) -> None:
    """Terminate backend `pid` and wait until it is gone."""
    await _terminate(engine, pid)
    await _gone(engine, pid)


async def _gone(engine, pid: int) -> None:
    """Wait until backend `pid` has ended."""
    from tests.fixtures.waiting import eventually

    async def gone() -> bool:
        async with engine.connect() as connection:
            return not (await connection.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid})).scalar_one()

    await eventually(gone, timeout=10, what=f"backend {pid} gone")


async def _driver_backend_pid(engine) -> int:
    async with engine.driver_connection() as connection:
        return (await (await connection.execute("SELECT pg_backend_pid()")).fetchone())[0]


async def test_a_driver_connection_runs_in_autocommit_in_utc_under_the_application_name(engine):
    async with engine.driver_connection() as connection:
        assert connection.autocommit
        row = await (await connection.execute(
            "SELECT current_setting('TimeZone'), current_setting('application_name'), now(),"
            " current_setting('jit')")).fetchone()
        # A statement on it is its own transaction: nothing is left open after it.
        assert connection.info.transaction_status.name == "IDLE"
    time_zone, application_name, now, jit = row
    assert time_zone == "UTC" and application_name == "mailwatch" and jit == "off"
    assert now.utcoffset().total_seconds() == 0


async def test_pooled_sessions_never_jit_compile_a_statement(sessions):
    """Postgres's default is on; a claim whose estimate crosses jit_above_cost would be
    compiled on every call (tens of milliseconds for a sub-millisecond plan)."""
    async with sessions() as session:
        assert (await session.execute(text("SELECT current_setting('jit')"))).scalar_one() == "off"


async def test_a_driver_connection_dropped_while_idle_is_replaced_before_use(engine, monkeypatch):
    from mailwatch.store import db

    victim = await _driver_backend_pid(engine)
    await _terminated(engine, victim)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # every returned connection counts as idle
    # The pool hands out its most recently returned connection: the dead one, pinged
    # first, dropped, and the statement runs on a new backend without an error.
    assert await _driver_backend_pid(engine) != victim


async def test_a_driver_connection_back_a_moment_ago_is_not_pinged_and_fails_once(engine, monkeypatch):
    import psycopg

    from mailwatch.store import db
    from mailwatch.store._errors import is_database_unavailable

    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    # Two connections in the pool, the victim returned last (handed out first).
    async with engine.driver_connection() as last_back:
        async with engine.driver_connection() as other:
            survivor = (await (await other.execute("SELECT pg_backend_pid()")).fetchone())[0]
        victim = (await (await last_back.execute("SELECT pg_backend_pid()")).fetchone())[0]
    await _terminated(engine, victim)
    # Without a ping the statement that meets the dead connection fails as "database
    # unavailable" (callers retry), and the idle connections are dropped with it (a
    # restart leaves them all dead): the next statement runs on a new connection.
    with pytest.raises(psycopg.OperationalError) as caught:
        await _driver_backend_pid(engine)
    assert is_database_unavailable(caught.value)
    assert await _driver_backend_pid(engine) not in (victim, survivor)


async def test_a_driver_checkout_fails_at_once_as_unavailable_while_postgres_is_unreachable():
    import time

    from mailwatch.store import create_engine
    from mailwatch.store._errors import is_database_unavailable
    from mailwatch_devstack.ports import free_port

    engine = create_engine(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/gone", pool_timeout=30)
    try:
        started = time.monotonic()
        with pytest.raises(Exception) as caught:
            await _driver_backend_pid(engine)
        # Not after the pool's 30 s timeout: the caller made the connection, which was refused.
        assert time.monotonic() - started < 10
        assert is_database_unavailable(caught.value)
    finally:
        await engine.dispose()


async def test_a_driver_checkout_waits_for_a_free_connection_then_times_out_as_unavailable(database_url):
    from mailwatch.store import create_engine
    from mailwatch.store._errors import is_database_unavailable
    from mailwatch.store.db import DriverPoolTimeout

    impatient = create_engine(database_url, pool_size=1, driver_pool_size=1, pool_timeout=0.2)
    patient = create_engine(database_url, pool_size=1, driver_pool_size=1, pool_timeout=60)
    try:
        async with impatient.driver_connection():
            with pytest.raises(DriverPoolTimeout) as caught:
                await _driver_backend_pid(impatient)
        assert is_database_unavailable(caught.value)

        async with patient.driver_connection() as held:
            taken = asyncio.create_task(_driver_backend_pid(patient))
            await asyncio.sleep(0)  # the task starts and waits for the one connection
            assert not taken.done()
            pid = (await (await held.execute("SELECT pg_backend_pid()")).fetchone())[0]
        assert await taken == pid  # handed over once it came back
    finally:
        await impatient.dispose()
        await patient.dispose()


async def _backends_named(engine, application_name: str) -> int:
    async with engine.connect() as connection:
        return (await connection.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name AND pid <> pg_backend_pid()"),
            {"name": application_name})).scalar_one()


async def test_dispose_closes_the_driver_pools_connections_and_the_engine_works_again(database_url):
    from tests.fixtures.waiting import eventually

    from mailwatch.store import create_engine

    engine = create_engine(database_url, pool_size=1, driver_pool_size=3, application_name="driver-pool-test")
    observer = create_engine(database_url, pool_size=1, application_name="observer")
    try:
        first = await _driver_backend_pid(engine)
        assert await _backends_named(observer, "driver-pool-test") >= 1
        await engine.dispose()

        async def none_left() -> bool:
            return await _backends_named(observer, "driver-pool-test") == 0

        await eventually(none_left, timeout=10, what="the driver pool's backends gone")
        # After dispose the engine makes new connections, as SQLAlchemy's own pool does.
        assert await _driver_backend_pid(engine) != first
    finally:
        await engine.dispose()
        await observer.dispose()


async def test_a_checkout_cancelled_during_its_ping_closes_the_connection(engine, monkeypatch):
    """A caller cancelled while its idle connection is being pinged (a stream read whose
    client went away) closes that connection: it is not left open, outside the pool's
    count, until the garbage collector finds it ("deleted while still open")."""
    from mailwatch.store import db

    pid = await _driver_backend_pid(engine)  # one idle connection in the pool
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # so the next checkout pings it

    async def use():
        async with engine.driver_connection() as connection:
            await connection.execute("SELECT 1")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        task = asyncio.create_task(use())
        await asyncio.sleep(0)  # the task runs up to the ping's first wait
        task.cancel()
        try:  # not pytest.raises: its record of the exception would keep the connection alive
            await task
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the checkout was not cancelled")
        del task
        # Its backend either serves the next checkout (pooled again) or is gone.
        if await _driver_backend_pid(engine) != pid:
            await _gone(engine, pid)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning) and "psycopg" in str(w.message)]


async def test_a_host_that_never_answers_fails_the_connection_within_the_connect_timeout():
    """A listener that accepts and then says nothing (a host swallowing packets): both pools'
    new connections fail as "database unavailable" after `connect_timeout`, instead of
    holding the caller (and its slot) for the operating system's TCP timeout."""
    from mailwatch.store import create_engine
    from mailwatch.store._errors import is_database_unavailable

    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader, writer):
        accepted.append(writer)  # keep it open, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = create_engine(f"postgresql+psycopg://u:p@127.0.0.1:{port}/db", connect_timeout=2)
    try:
        async with asyncio.timeout(60):  # without a connect timeout: forever
            with pytest.raises(Exception) as through_sqlalchemy:
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
            with pytest.raises(Exception) as through_driver_pool:
                async with engine.driver_connection() as connection:
                    await connection.execute("SELECT 1")
        assert is_database_unavailable(through_sqlalchemy.value)
        assert is_database_unavailable(through_driver_pool.value)
    finally:
        await engine.dispose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_driver_connection_keeps_one_cursor_per_statement_and_each_run_gets_its_own_rows(engine):
    import psycopg

    from mailwatch.store.db import fetch_all

    add = "SELECT %(n)s::int + 1, %(label)s::text"
    divide = "SELECT 12 / %(n)s::int"
    async with engine.driver_connection() as connection:
        first = await fetch_all(connection, add, {"n": 1, "label": "a"})
        with pytest.raises(psycopg.errors.DivisionByZero):
            await fetch_all(connection, divide, {"n": 0})
        # The kept cursors serve their statements again: new parameters, new rows, also
        # after a run that failed.
        second = await fetch_all(connection, add, {"n": 41, "label": "b"})
        divided = await fetch_all(connection, divide, {"n": 4})
        kept = len(connection.statement_cursors)
    assert (first, second, divided) == ([(2, "a")], [(42, "b")], [(3,)])
    assert kept == 2
