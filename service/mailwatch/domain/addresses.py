"""Email addresses: the one rule for what mailwatch takes as an address and how it stores it.

Addresses are compared and stored lower-cased and trimmed (`normalize`): Gmail
treats the address case-insensitively, so `Alice@Example.com` and
`alice@example.com` are one mailbox for registrations, notifications and
renewal slots alike.

Two sources, one length limit (RFC 5321's path, 254): a caller's address
(`is_registrable`) must look like a deliverable address, a dotted domain of DNS
labels, so typos fail at the API; an address Gmail itself published in a
notification (`is_notified`) is only checked for shape (one "@", nothing empty,
no whitespace or control characters, which also keeps NUL bytes that Postgres
text refuses out of queries): Gmail has validated it, and rejecting it here
would hide a notification rather than catch a mistake.
"""

from __future__ import annotations

import re

# RFC 5321 path limit; longer strings are not deliverable addresses.
MAX_LENGTH = 254

_REGISTRABLE = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
_NOTIFIED = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+")


def normalize(address: str) -> str:
    """The stored, compared form of an address."""
    return address.strip().lower()


def is_registrable(address: str) -> bool:
    """Whether a caller's (already trimmed) address may be registered."""
    return len(address) <= MAX_LENGTH and _REGISTRABLE.fullmatch(address) is not None


def is_notified(address: str) -> bool:
    """Whether an address in a Gmail notification is shaped like one."""
    return len(address) <= MAX_LENGTH and _NOTIFIED.fullmatch(address) is not None
