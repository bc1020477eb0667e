"""Classify database errors by SQLSTATE (psycopg.errors classes), never by message text."""

from __future__ import annotations

import psycopg.errors
from sqlalchemy.exc import DBAPIError


def _cause(exc: BaseException) -> BaseException | None:
    return exc.orig if isinstance(exc, DBAPIError) else exc


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
