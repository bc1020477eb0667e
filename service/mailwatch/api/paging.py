"""Keyset pages: a page token's position back to a typed key, and the next token.

Every list is paged in SQL: the store returns up to one row more than the
page, which tells whether another page exists; the token holds the last
row's key (tokens.encode_page_token), bound to the request's parameters.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Callable, Sequence, TypeVar

from mailwatch.api import tokens
from mailwatch.api.validation.fields import PageRequest
from mailwatch.domain.errors import FieldViolation, InvalidArgument

T = TypeVar("T")


def _invalid() -> InvalidArgument:
    return InvalidArgument([FieldViolation("page_token", "page token is not valid")])


def after_created_id(position: Any) -> tuple[datetime, uuid.UUID] | None:
    """(created, id) of the previous page's last row, from a [created, id] position."""
    if position is None:
        return None
    try:
        created, row_id = position
        return datetime.fromisoformat(created), uuid.UUID(row_id)
    except (TypeError, ValueError):
        raise _invalid() from None


def after_text(position: Any) -> str | None:
    """The previous page's last key, from a text position."""
    if position is None or isinstance(position, str):
        return position
    raise _invalid()


def one_page(found: Sequence[T], page: PageRequest, position: Callable[[T], Any]) -> tuple[list[T], str]:
    """The page (`found` holds up to one row more) and the token for the next one ("" at the end)."""
    rows = list(found[: page.page_size])
    if len(found) <= page.page_size or not rows:
        return rows, ""
    return rows, tokens.encode_page_token(position(rows[-1]), fingerprint=page.fingerprint)
