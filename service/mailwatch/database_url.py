"""The one place that reads a Postgres URL: checks its scheme, and writes it for
SQLAlchemy (psycopg 3 driver named) or for libpq (psycopg.connect, LISTEN).

A leaf module (no mailwatch imports), so config, store, streams, the dev stack,
tests and benchmarks all share it.
"""

from __future__ import annotations

SQLALCHEMY_SCHEME = "postgresql+psycopg"
_SCHEMES = ("postgresql", "postgres", SQLALCHEMY_SCHEME)


def check(url: str) -> None:
    """ValueError unless `url` is a `postgresql://`, `postgres://` or `postgresql+psycopg://` URL."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ValueError(f"not a postgresql:// URL (scheme {scheme!r})")


def sqlalchemy_url(url: str) -> str:
    """`postgresql://…` / `postgres://…` / `postgresql+psycopg://…` -> the psycopg 3 SQLAlchemy URL."""
    check(url)
    return f"{SQLALCHEMY_SCHEME}://{url.partition('://')[2]}"


def libpq_url(url: str) -> str:
    """A libpq connection URL from a SQLAlchemy one (`postgresql+psycopg://` → `postgresql://`)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url  # a key=value conninfo string: libpq takes it as is
    if scheme.startswith("postgresql+") or scheme.startswith("postgres+") or scheme == "postgres":
        return f"postgresql://{rest}"
    if scheme != "postgresql":
        raise ValueError(f"not a postgresql:// URL (scheme {scheme!r})")
    return url
