"""When a watch is renewed next (pure logic).

Google asks for a renewal at least every 7 days and recommends once a day.
Each renewal is placed a random fraction into a window that ends a day after
now, so mailboxes registered in the same minute drift apart instead of
renewing together forever.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

RENEW_EVERY = timedelta(days=1)
SPREAD = 0.25  # renew between 18 and 24 hours after the last watch


def next_renewal_at(now: datetime, expiration: datetime, *, rng: random.Random | None = None) -> datetime:
    rng = rng or random
    due = now + RENEW_EVERY * (1 - SPREAD * rng.random())
    # Never later than halfway to expiry, whatever Gmail answered.
    return min(due, now + (expiration - now) / 2) if expiration > now else now
