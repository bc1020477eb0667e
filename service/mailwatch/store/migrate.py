"""Run the Alembic migrations programmatically (no alembic.ini).

    upgrade(url, secret_keys=keys)  # what `mailwatch migrate` does
    downgrade(url, "base")
    current(url)            # revision id or None
    head()                  # the revision this code expects

All functions are synchronous and open their own short-lived connection.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, pool

from mailwatch.database_url import sqlalchemy_url

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# pg_advisory_xact_lock key held while migrating ("mailwatch" in ASCII, truncated
# to fit a bigint). Other advisory locks in mailwatch use the two-int4 key
# space, which Postgres keeps separate from the bigint one.
MIGRATION_LOCK_KEY = int.from_bytes(b"mailwatc", "big") & 0x7FFF_FFFF_FFFF_FFFF


# Alembic's `context`/`op` proxies are process globals: one migration run per
# process at a time. Across processes (replicas) the advisory lock in env.py
# serialises runs.
_IN_PROCESS = threading.Lock()


def alembic_config(url: str | None = None, secret_keys: Sequence[str] = ()) -> Config:
    """The Alembic config; `secret_keys` (MAILWATCH_SECRET_KEYS) for migrations that
    re-seal stored credentials (0017); without them such a migration reads the
    MAILWATCH_SECRET_KEYS environment variable."""
    config = Config()
    config.attributes["secret_keys"] = tuple(secret_keys)
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url is not None:
        # Passed as an attribute, not a main option: ConfigParser would try to
        # interpolate a '%' in a password.
        config.attributes["url"] = sqlalchemy_url(url)
    return config


def upgrade(url: str, revision: str = "head", *, secret_keys: Sequence[str] = ()) -> None:
    with _IN_PROCESS:
        command.upgrade(alembic_config(url, secret_keys), revision)


def downgrade(url: str, revision: str = "base", *, secret_keys: Sequence[str] = ()) -> None:
    with _IN_PROCESS:
        command.downgrade(alembic_config(url, secret_keys), revision)


def head() -> str:
    script = ScriptDirectory.from_config(alembic_config())
    heads = script.get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations have {len(heads)} heads; merge them")
    return heads[0]


def current_on_connection(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def current(url: str) -> str | None:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return current_on_connection(connection)
    finally:
        engine.dispose()
