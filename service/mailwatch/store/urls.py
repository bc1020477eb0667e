"""Database URLs as SQLAlchemy wants them (its own module: db.py and migrate.py both need it)."""

from __future__ import annotations

DRIVER_SCHEME = "postgresql+psycopg"


def sqlalchemy_url(url: str) -> str:
    """`postgresql://…` / `postgres://…` / `postgresql+psycopg://…` -> the psycopg 3 SQLAlchemy URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres", DRIVER_SCHEME):
        raise ValueError(f"not a postgresql:// URL (scheme {scheme!r})")
    return f"{DRIVER_SCHEME}://{rest}"
