"""Postgres storage: SQLAlchemy 2 async models, queries as plain async functions
taking an `AsyncSession` (one module per table), and Alembic migrations.

    from mailwatch.store import create_engine, session_factory, ensure_migrated
    from mailwatch.store import tenants, api_keys, mailboxes, changes, notifications

Queries return `mailwatch.domain.models` dataclasses, never ORM rows, and raise
`mailwatch.domain.errors` exceptions. They run inside the caller's transaction;
the caller commits (`async with sessions() as s, s.begin(): ...`).
"""

from mailwatch.store.db import create_engine, ensure_migrated, session_factory

__all__ = ["create_engine", "ensure_migrated", "session_factory"]
