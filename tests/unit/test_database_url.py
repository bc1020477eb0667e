"""The one Postgres URL helper: scheme check, SQLAlchemy form, libpq form."""

from __future__ import annotations

import pytest

from mailwatch.config import ConfigError, Settings
from mailwatch.database_url import check, libpq_url, sqlalchemy_url


@pytest.mark.parametrize(
    "given",
    ["postgresql://u:p%40ss@h:5432/db", "postgres://u:p%40ss@h:5432/db", "postgresql+psycopg://u:p%40ss@h:5432/db"],
)
def test_urls_get_the_psycopg_driver(given):
    assert sqlalchemy_url(given) == "postgresql+psycopg://u:p%40ss@h:5432/db"
    assert Settings(database_url=given).sqlalchemy_url == "postgresql+psycopg://u:p%40ss@h:5432/db"


@pytest.mark.parametrize("given", ["mysql://h/db", "h:5432/db", "postgresql+asyncpg://h/db"])
def test_other_urls_are_refused(given):
    with pytest.raises(ValueError):
        sqlalchemy_url(given)
    with pytest.raises(ValueError):
        check(given)
    with pytest.raises(ConfigError, match="MAILWATCH_DATABASE_URL must be a postgresql:// URL"):
        Settings(database_url=given).validated()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://u:p@h:5432/db", "postgresql://u:p@h:5432/db"),
        ("postgres://u@h/db?sslmode=require", "postgresql://u@h/db?sslmode=require"),
        ("postgresql://h/db", "postgresql://h/db"),
        ("host=h dbname=db", "host=h dbname=db"),
    ],
)
def test_libpq_url(url, expected):
    assert libpq_url(url) == expected


def test_libpq_url_refuses_other_schemes():
    with pytest.raises(ValueError):
        libpq_url("mysql://h/db")
