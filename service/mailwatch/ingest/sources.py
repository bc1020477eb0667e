"""Which subscriptions ingest pulls, and how each one is doing.

Ingest pulls the deployment's subscriptions (MAILWATCH_PUBSUB_SUBSCRIPTIONS)
and every subscription named in a tenant's Google settings, each with its own
loops and backoff. A subscription that breaks (deleted, permission removed)
must be visible to the tenant that owns it and to the operator, and must not
stall the others: its health goes to `subscription_statuses` (shared by every
replica, read through GetGoogleSettings / ListSubscriptionStatuses) and to a
gauge labelled by owner (the tenant id, or "deployment": bounded by the number
of tenants, never an address).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from prometheus_client import Gauge

from mailwatch.clock import Clock
from mailwatch.store import google_settings
from mailwatch.store.db import Sessions

log = logging.getLogger(__name__)

DEPLOYMENT = "deployment"

SUBSCRIPTION_HEALTHY = Gauge(
    "mailwatch_ingest_subscription_healthy",
    "1 while the last pull of a subscription worked, 0 while it fails; by owner (tenant id or 'deployment').",
    ["owner"],
)

# A healthy subscription's status row is refreshed at most this often (every
# pull would be a write per second per subscription); a change is written at once.
_OK_REFRESH_SECONDS = 60.0
_ERROR_TEXT_LIMIT = 500


async def configured_subscriptions(
    sessions: Sessions, deployment: Sequence[str]
) -> dict[str, str]:
    """subscription path -> owner: the deployment's, then each tenant's."""
    sources = await google_settings.sources(sessions)
    owners = {path: DEPLOYMENT for path in deployment}
    for tenant_id, path in sources.subscriptions.items():
        owners.setdefault(path, str(tenant_id))
    return owners


def describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text[:_ERROR_TEXT_LIMIT]


class SubscriptionHealth:
    """Records pull outcomes per subscription (database + gauge), cheaply when nothing changes."""

    def __init__(self, sessions: Sessions, clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock
        self._owners: dict[str, str] = {}
        self._written: dict[str, tuple[bool, float]] = {}  # subscription -> (ok, monotonic time written)
        self._failing: dict[str, float] = {}  # subscription -> monotonic time its last answered pull failed

    def owned_by(self, subscription: str, owner: str) -> None:
        self._owners[subscription] = owner

    def forget(self, subscription: str) -> None:
        self._written.pop(subscription, None)
        self._failing.pop(subscription, None)
        owner = self._owners.pop(subscription, None)
        if owner is not None and owner not in self._owners.values():
            SUBSCRIPTION_HEALTHY.remove(owner)

    async def record_unanswered(self, subscription: str) -> None:
        """A pull that got no answer within its timeout: a quiet subscription's usual outcome,
        so it counts as healthy, but it is no proof that a failing one (deleted, no
        permission) works again; that stays failing until a pull is answered."""
        if subscription not in self._failing:
            await self.record(subscription, None)

    async def record(self, subscription: str, error: BaseException | None, *, sent_at: float | None = None) -> None:
        """`sent_at` (time.monotonic()) of an answered pull: an answer to a pull sent before the
        last failure was recorded says nothing new (the emulator answers a pull in flight when
        its subscription is deleted, empty, after the other pullers' NotFound), so it does not
        heal a failing subscription."""
        ok = error is None
        failed_at = self._failing.get(subscription)
        if ok and failed_at is not None and sent_at is not None and sent_at < failed_at:
            return
        if ok:
            self._failing.pop(subscription, None)
        else:
            self._failing[subscription] = time.monotonic()
        SUBSCRIPTION_HEALTHY.labels(self._owners.get(subscription, DEPLOYMENT)).set(1 if ok else 0)
        last = self._written.get(subscription)
        now = time.monotonic()
        if ok and last is not None and last[0] and now - last[1] < _OK_REFRESH_SECONDS:
            return
        try:
            await google_settings.record_pull_outcome(
                self._sessions, subscription, error=None if ok else describe(error), now=self._clock.now()
            )
        except Exception as exc:  # noqa: BLE001 - status is best effort; pulling goes on
            log.warning("could not record subscription status", extra={"subscription": subscription,
                                                                        "error": repr(exc)})
            return
        self._written[subscription] = (ok, now)


class TenantPushAudiences:
    """The push audiences of tenants' Google settings (audience -> projects), for the push
    endpoint's token check: read synchronously there, refreshed from the database here."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions
        self._current: dict[str, frozenset[str]] = {}

    def __call__(self) -> dict[str, frozenset[str]]:
        return self._current

    async def refresh(self) -> None:
        try:
            sources = await google_settings.sources(self._sessions)
        except Exception as exc:  # noqa: BLE001 - keep the last known audiences
            log.warning("could not read tenants' push audiences", extra={"error": repr(exc)})
            return
        self._current = {audience: frozenset(projects) for audience, projects in sources.push_audiences.items()}
