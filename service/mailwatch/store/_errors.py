"""Classify database errors by SQLSTATE (psycopg.errors classes), never by message text."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg.errors
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from mailwatch.domain.errors import NotFound


def _cause(exc: BaseException) -> BaseException | None:
    return exc.orig if isinstance(exc, DBAPIError) else exc


# SQLSTATEs that mean "the server is not there for us right now", not "this
# statement is wrong": class 08 (connection exception), 57P01 admin_shutdown,
# 57P02 crash_shutdown, 57P03 cannot_connect_now (starting up / shutting down),
# 53300 too_many_connections.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def is_database_unavailable(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) says Postgres is unreachable or going away.

    libpq-level failures (connection refused, server closed the connection)
    reach us as `psycopg.OperationalError` without a SQLSTATE; the server's own
    refusals carry one. SQLAlchemy wraps both in a DBAPIError. A pool with
    every connection in use for its whole timeout (SQLAlchemy's, or the driver
    pool's `DriverPoolTimeout`) is the same to the caller: no connection now,
    the same call expected to work shortly.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PoolTimeout):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True  # SQLAlchemy's dialect recognised a disconnect
        cause = _cause(current)
        if isinstance(cause, psycopg.Error):
            sqlstate = cause.sqlstate
            if sqlstate is None:
                return isinstance(cause, psycopg.OperationalError)
            return sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES
        current = current.__cause__
    return False


# SQLSTATEs that mean "this transaction lost a race with another one; the same work
# again is expected to succeed": 40P01 deadlock_detected, 40001 serialization_failure.
_CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})


def is_concurrency_conflict(exc: BaseException) -> bool:
    """True when Postgres rolled `exc`'s transaction back for a race with another (a
    deadlock between two writers that lock the same rows in different orders)."""
    sqlstate = getattr(_cause(exc), "sqlstate", None)
    return sqlstate in _CONFLICT_SQLSTATES


def constraint_name(exc: BaseException) -> str | None:
    cause = _cause(exc)
    diag = getattr(cause, "diag", None)
    return getattr(diag, "constraint_name", None)


def is_unique_violation(exc: BaseException, constraint: str | None = None) -> bool:
    """A 23505 unique_violation, optionally on the named constraint."""
    if not isinstance(_cause(exc), psycopg.errors.UniqueViolation):
        return False
    return constraint is None or constraint_name(exc) == constraint


def is_foreign_key_violation(exc: BaseException, constraint: str | None = None) -> bool:
    """A 23503 foreign_key_violation, optionally on the named constraint."""
    if not isinstance(_cause(exc), psycopg.errors.ForeignKeyViolation):
        return False
    return constraint is None or constraint_name(exc) == constraint


@contextlib.contextmanager
def tenant_must_exist(tenant_id: uuid.UUID, constraint: str) -> Iterator[None]:
    """A write of a tenant's row: its foreign key to tenants (`constraint`) failing means
    the tenant does not exist, which the caller sees as NotFound."""
    try:
        yield
    except IntegrityError as exc:
        if is_foreign_key_violation(exc, constraint):
            raise NotFound("tenant not found", metadata={"tenant_id": str(tenant_id)}) from None
        raise
