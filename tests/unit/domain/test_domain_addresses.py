"""The one email-address rule: normalised form, a caller's address, a notified address."""

from __future__ import annotations

import pytest

from mailwatch.domain import addresses


def test_addresses_are_normalised():
    assert addresses.normalize("  Alice@Example.COM ") == "alice@example.com"


@pytest.mark.parametrize("value", ["a@b.c", "first.last+tag@sub.example.com", "x" * 64 + "@example.com"])
def test_registrable_addresses(value):
    assert addresses.is_registrable(value)
    assert addresses.is_notified(value)


@pytest.mark.parametrize("value", ["", "a", "a@b", "a b@c.d", "a@b@c.d", "@c.d", "a@-b.c", "x" * 250 + "@c.de"])
def test_unregistrable_addresses(value):
    assert not addresses.is_registrable(value)


@pytest.mark.parametrize("value", ["a@b", "ü@bücher.de"])
def test_gmail_vetted_addresses_are_only_checked_for_shape(value):
    # Gmail published it: a dotless or non-ASCII domain is not ours to refuse.
    assert addresses.is_notified(value)
    assert not addresses.is_registrable(value)


@pytest.mark.parametrize("value", ["", "no-at", "a@b@c", "a b@c", "a\x00@c", "@c", "a@", "x" * 250 + "@c.de"])
def test_malformed_notified_addresses(value):
    assert not addresses.is_notified(value)
