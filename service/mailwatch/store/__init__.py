"""Postgres storage: SQLAlchemy 2 async models, queries as plain async functions
taking an `AsyncSession` (one module per table), and Alembic migrations.

    from mailwatch.store import create_engine, session_factory, ensure_migrated
    from mailwatch.store import tenants, api_keys, mailboxes, changes, notifications

Queries return `mailwatch.domain.models` dataclasses, never ORM rows, and raise
`mailwatch.domain.errors` exceptions. A query takes an `AsyncSession` and runs
in its transaction; the verbs the rest of the service calls take the `Sessions`
handle (`db.Sessions`) and choose their own mode (`db.transaction`: a unit of
work; `db.autocommit`: one statement; `db.reading`: reads). Nothing outside
`store/` opens a session (tests/unit/layers/test_layers_store_owns_transactions.py).
"""

from mailwatch.store.db import create_engine, ensure_migrated, session_factory

__all__ = ["create_engine", "ensure_migrated", "session_factory"]
