"""storable_text: what Postgres refuses in text / jsonb is replaced, the rest kept."""

from __future__ import annotations

from mailwatch.domain.text import storable_text


def test_storable_text_replaces_what_postgres_refuses():
    assert storable_text("a\x00b") == "a\ufffdb"
    assert storable_text("x\ud800y") == "x?y"
    assert storable_text("plain é 😀") == "plain é 😀"
    assert storable_text(42) == "42"
