"""benchmarks/hot_statements.py's translation of psycopg's placeholders into asyncpg's."""

from __future__ import annotations

from benchmarks.hot_statements import numbered


def test_each_name_is_one_number_in_order_of_first_use():
    assert numbered("a = %(x)s AND b = %(y)s OR c = %(x)s") == ("a = $1 AND b = $2 OR c = $1", ("x", "y"))


def test_an_escaped_percent_is_one_percent_sign():
    assert numbered("x LIKE 'a%%' AND y = %(y)s") == ("x LIKE 'a%' AND y = $1", ("y",))


def test_a_statement_without_parameters_is_unchanged():
    assert numbered("SELECT 1") == ("SELECT 1", ())
