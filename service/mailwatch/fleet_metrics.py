"""Gauges about the whole fleet of mailboxes and streams, read from Postgres when /metrics is scraped.

The workers' own counters say what one replica did; alerts also need the
state of the data (how long the oldest due mailbox has waited, how soon a
watch lapses, how many mailboxes are in AUTH_FAILED, how many streams each
tenant holds against its limit, which counts every replica's). Every replica reports
the same fleet-wide values, so alert on max() across pods. A scrape reuses
the last figures for `min_interval` seconds, so frequent scrapes by several
Prometheus servers cost at most one query per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import Gauge

from mailwatch.clock import Clock
from mailwatch.gmail.quota import tenant_label
from mailwatch.store import fleet, stream_leases
from mailwatch.store.db import Sessions

log = logging.getLogger(__name__)

MAILBOXES = Gauge("mailwatch_mailboxes", "Mailboxes by state (fleet-wide)", ["state"])
SYNC_DUE = Gauge("mailwatch_sync_due_mailboxes", "ACTIVE mailboxes whose sync is due now (fleet-wide backlog)")
OLDEST_SYNC_DUE_AGE = Gauge(
    "mailwatch_sync_oldest_due_age_seconds",
    "How long the longest-waiting due ACTIVE mailbox has waited for its sync (0 when none is due)",
)
SOONEST_WATCH_EXPIRY = Gauge(
    "mailwatch_watch_soonest_expiry_seconds",
    "Seconds until the soonest ACTIVE mailbox's Gmail watch expires (negative: already expired; "
    "+Inf when no ACTIVE mailbox has a watch)",
)
TENANT_STREAM_LEASES = Gauge(
    "mailwatch_tenant_stream_leases",
    "Change streams each tenant holds open, all replicas together: what its stream limit counts (fleet-wide; "
    "a replica that died counts until its leases run out)", ["tenant"],
)
REFRESH_FAILURES = Gauge(
    "mailwatch_fleet_metrics_stale", "1 when the last refresh of the fleet-wide gauges failed (values are old)"
)


class FleetMetrics:
    def __init__(
        self,
        sessions: Sessions,
        clock: Clock,
        *,
        min_interval: float = 10.0,
        query_timeout: float = 5.0,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.min_interval = min_interval
        self.query_timeout = query_timeout
        self._refreshed_at: float | None = None
        self._stream_tenants: set[str] = set()  # the tenants TENANT_STREAM_LEASES has a value for
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Update the gauges unless they were updated less than `min_interval` ago."""
        async with self._lock:  # concurrent scrapes share one query
            if self._refreshed_at is not None and time.monotonic() - self._refreshed_at < self.min_interval:
                return
            try:
                # Bounded: Prometheus gives up on a scrape after ~10 s, and the
                # process's own counters must still be served when Postgres hangs.
                async with asyncio.timeout(self.query_timeout):
                    now = self.clock.now()
                    summary = await fleet.summary(self.sessions, now)
                    streams = await stream_leases.held_by_tenant(self.sessions)
            except Exception:
                # A scrape must still answer (the process counters matter most
                # when the database is in trouble); the stale flag says so.
                log.warning("fleet metrics refresh failed", exc_info=True)
                REFRESH_FAILURES.set(1)
                return
            self._refreshed_at = time.monotonic()
        REFRESH_FAILURES.set(0)
        for state, count in summary.mailboxes_by_state.items():
            MAILBOXES.labels(state=state).set(count)
        SYNC_DUE.set(summary.sync_due)
        OLDEST_SYNC_DUE_AGE.set(
            max(0.0, (now - summary.oldest_sync_due).total_seconds()) if summary.oldest_sync_due else 0.0
        )
        SOONEST_WATCH_EXPIRY.set(
            (summary.soonest_watch_expiration - now).total_seconds()
            if summary.soonest_watch_expiration else float("inf")
        )
        self._set_tenant_streams({tenant_label(tenant_id): count for tenant_id, count in streams.items()})

    def _set_tenant_streams(self, streams: dict[str, int]) -> None:
        for gone in self._stream_tenants - streams.keys():  # a deleted tenant's series ends
            TENANT_STREAM_LEASES.remove(gone)
        for tenant, count in streams.items():
            TENANT_STREAM_LEASES.labels(tenant=tenant).set(count)
        self._stream_tenants = set(streams)
