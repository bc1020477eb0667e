"""Alembic environment for mailwatch, driven programmatically by `mailwatch.store.migrate`.

There is no alembic.ini: `migrate.alembic_config()` builds the Config and puts
the database URL (or an open connection) in `config.attributes`. Migrations run
on a synchronous psycopg connection so `upgrade()` works from plain code, the
CLI and inside a running event loop alike.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from mailwatch.store.models import Base
from mailwatch.store.migrate import MIGRATION_LOCK_KEY

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.attributes["url"],
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:
    # One transaction for the whole upgrade (Postgres DDL is transactional): a
    # failure leaves the database at the revision it started from.
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        # Replicas that start together and all run `migrate` queue here; the
        # one that waits re-reads the version table afterwards and finds
        # nothing left to do.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.attributes["url"], poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
