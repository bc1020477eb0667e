"""When a watch is renewed next (pure logic).

Google asks for a renewal at least every 7 days and recommends once a day.
Each mailbox owns a fixed time of day, its *slot*, derived from a hash of its
key (tenant + address): slots of many mailboxes are spread uniformly over the
day, whenever those mailboxes were registered. A renewal is due at the first
occurrence of the slot that is at least MIN_GAP away, so

- a herd registered in one minute has its first renewals spread evenly over
  a day (12 to 36 hours after registering, uniformly);
- afterwards every renewal is exactly one day after the previous one;
- a renewal that succeeded late (after failures, an outage, a restart) snaps
  back to the slot, so a herd can never form again.

Without a key the slot is random (a caller that has no stable key still
spreads its renewals, it just does not keep the phase).
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta, timezone

from mailwatch.domain import addresses

RENEW_EVERY = timedelta(days=1)
MIN_GAP = timedelta(hours=12)  # never renew again sooner than this after a watch

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def renewal_slot(key: str | None, *, rng: random.Random | None = None) -> timedelta:
    """The mailbox's offset into each day (uniform over [0, RENEW_EVERY))."""
    if key is None:
        fraction = (rng or random).random()
    else:
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2**64
    return RENEW_EVERY * fraction


def next_renewal_at(
    now: datetime, expiration: datetime, *, key: str | None = None, rng: random.Random | None = None
) -> datetime:
    earliest = now + MIN_GAP
    day = RENEW_EVERY.total_seconds()
    day_start = _EPOCH + timedelta(seconds=((earliest - _EPOCH).total_seconds() // day) * day)
    due = day_start + renewal_slot(key, rng=rng)
    if due < earliest:
        due += RENEW_EVERY
    # Never later than halfway to expiry, whatever Gmail answered.
    return min(due, now + (expiration - now) / 2) if expiration > now else now


def renewal_key(tenant_id: object, email_address: str) -> str:
    """The slot key of a mailbox: stable across re-registration, distinct per tenant."""
    return f"{tenant_id}/{addresses.normalize(email_address)}"
