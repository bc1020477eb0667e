"""The composition root: every long-lived object of one mailwatch process.

Built once from Settings by `App.open`; the server's servicers and the
workers receive what they need from here (nothing reads the environment).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field

from aiohttp import web

from mailwatch.clock import Clock, SystemClock
from mailwatch.config import ConfigError, Settings
from mailwatch.domain.errors import SecretsNotConfigured
from mailwatch.gmail.budget import TenantBudgets
from mailwatch.gmail.client import GmailClient
from mailwatch.http import create_http_app, start_http
from mailwatch.ingest.pull import PullIngestor
from mailwatch.ingest.sources import TenantPushAudiences, configured_subscriptions
from mailwatch.lifecycle.messages import MailboxMessages
from mailwatch.lifecycle.registration import Registrations
from mailwatch.secrets import SecretBox
from mailwatch.store import gmail_budgets
from mailwatch.store import google_settings as settings_store
from mailwatch.store import tenant_limits as limits_store
from mailwatch.store.db import Engine, Sessions, create_engine, ensure_migrated, session_factory
from mailwatch.store.usage_counts import SharedCounts
from mailwatch.streams.changes import ChangeStreamer
from mailwatch.streams.notifier import ChangeNotifier
from mailwatch.usage_limits import UsageLimits
from mailwatch.workers.backfill import BACKFILL_CONCURRENCY, BackfillWorker
from mailwatch.workers.sync import SyncWorker
from mailwatch.workers.poll import PollWorker
from mailwatch.workers.prune import PruneWorker
from mailwatch.workers.renew import RenewWorker

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    engine: Engine
    sessions: Sessions
    secret_box: SecretBox
    gmail: GmailClient
    clock: Clock
    registrations: Registrations
    messages: MailboxMessages
    notifier: ChangeNotifier
    streamer: ChangeStreamer
    sync_worker: SyncWorker
    prune_worker: PruneWorker
    poll_worker: PollWorker
    renew_worker: RenewWorker
    usage_limits: UsageLimits
    backfill_worker: BackfillWorker
    ingestor: PullIngestor | None = None
    http_runner: web.AppRunner | None = None
    http_port: int | None = None  # bound port of MAILWATCH_HTTP_LISTEN, once started
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _background: list[asyncio.Task] = field(default_factory=list)

    @classmethod
    async def open(cls, settings: Settings, *, clock: Clock | None = None) -> "App":
        clock = clock or SystemClock()
        try:
            secret_box = SecretBox(settings.secret_keys)  # fails fast without a usable key
        except SecretsNotConfigured as exc:
            raise ConfigError(f"MAILWATCH_SECRET_KEYS: {exc.message} (make one with `mailwatch secret-key`)") from None
        # The driver pool serves the one-statement verbs of each change (store.db): a page commit per
        # sync slot, the claim, ingest's pull loops' writes and the shared stream reads.
        engine = create_engine(settings.sqlalchemy_url,
                               pool_size=max(10, settings.sync.concurrency + BACKFILL_CONCURRENCY + 4),
                               driver_pool_size=settings.sync.concurrency + settings.ingest.concurrency + 2)
        try:
            await ensure_migrated(engine)
        except BaseException:
            await engine.dispose()
            raise
        sessions = session_factory(engine)
        # Gmail calls block a thread each: enough threads for every mailbox syncing at once.
        # Each tenant's Gmail quota budget: its own (Google settings) or the deployment's.
        # Every replica takes from one bucket per tenant in Postgres, so the budget holds across replicas.
        budgets = TenantBudgets(settings.gmail.tenant_units_per_minute,
                                override=lambda tenant_id: settings_store.gmail_budget(sessions, tenant_id),
                                shared=functools.partial(gmail_budgets.take_units, sessions))
        gmail = GmailClient(settings.gmail, max_workers=max(8, settings.sync.concurrency * 2), budgets=budgets)
        notifier = ChangeNotifier(settings.database_url)
        # Each tenant's limits on our own resources: its own (tenant_limits) or the deployment's.
        # Counted in Postgres, so they hold for the deployment, not per replica.
        usage_limits = UsageLimits(settings.limits, lambda tenant_id: limits_store.own_limits(sessions, tenant_id),
                                   counts=SharedCounts(sessions))
        sync_worker = SyncWorker(settings=settings.sync, sessions=sessions, gmail=gmail, secret_box=secret_box,
                                 clock=clock)
        backfill_worker = BackfillWorker(settings=settings.sync, sessions=sessions, gmail=gmail,
                                         secret_box=secret_box, clock=clock)
        ingestor = None
        subscriptions = settings.pubsub.subscriptions
        # A push-only deployment (no subscriptions, push on) pulls nothing, for tenants neither.
        if settings.ingest.enabled and (subscriptions or not settings.push.enabled):
            # The deployment's subscriptions and every tenant's (re-read as settings change).
            ingestor = PullIngestor.from_settings(
                settings.ingest, sessions, subscriptions, on_marked_due=sync_worker.wake,
                sources=functools.partial(configured_subscriptions, sessions, subscriptions),
            )
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            secret_box=secret_box,
            gmail=gmail,
            clock=clock,
            registrations=Registrations(sessions, gmail, secret_box, clock, settings.pubsub.topic, limits=usage_limits,
                                        on_backfill=backfill_worker.wake),
            messages=MailboxMessages(sessions, gmail, secret_box),
            notifier=notifier,
            streamer=ChangeStreamer.from_settings(settings.stream, sessions, notifier, clock=clock),
            sync_worker=sync_worker,
            prune_worker=PruneWorker(settings=settings.prune, sessions=sessions, clock=clock),
            poll_worker=PollWorker(sessions, settings=settings.poll, clock=clock, on_due=sync_worker.wake),
            renew_worker=RenewWorker(
                settings=settings.renew, sessions=sessions, gmail=gmail, secret_box=secret_box, clock=clock,
                topic=settings.pubsub.topic,  # the deployment's; tenants' own topics are renewed too
                # A renewal claim is taken over after the same lease as a sync's.
                lease_seconds=settings.sync.lease_seconds,
            ),
            usage_limits=usage_limits,
            backfill_worker=backfill_worker,
            ingestor=ingestor,
        )

    @property
    def workers(self) -> list:
        """The background loops, each with run() and stop()."""
        return [self.sync_worker, self.prune_worker, self.poll_worker, self.renew_worker, self.backfill_worker]

    async def start(self) -> None:
        """Start everything besides the gRPC server: LISTEN, Pub/Sub pull, the HTTP side, the workers."""
        await self.notifier.start()
        if self.ingestor is not None:
            await self.ingestor.start()
        if self.settings.http.listen:
            audiences = None
            if self.settings.push.enabled:
                audiences = TenantPushAudiences(self.sessions)
                await audiences.refresh()
                self._background.append(asyncio.create_task(self._refresh_audiences(audiences), name="push-audiences"))
            http_app = create_http_app(self.settings.push, self.sessions, self.clock,
                                       on_marked_due=self.sync_worker.wake, tenant_audiences=audiences)
            self.http_runner, self.http_port = await start_http(http_app, self.settings.http)
        self._tasks = [asyncio.create_task(worker.run(), name=type(worker).__name__) for worker in self.workers]

    async def _refresh_audiences(self, audiences: "TenantPushAudiences") -> None:
        """Tenants' push audiences, re-read as their Google settings change (until stop cancels)."""
        while True:
            await asyncio.sleep(self.settings.ingest.sources_refresh_seconds)
            await audiences.refresh()

    async def stop(self) -> None:
        """Stop taking work (finishing what is in flight), then stop the workers."""
        if self.http_runner is not None:
            await self.http_runner.cleanup()  # push requests in flight finish first
            self.http_runner = None
        if self.ingestor is not None:
            await self.ingestor.stop()  # finishes its in-flight batch first
        for worker in self.workers:
            worker.stop()
        tasks, self._tasks = self._tasks, []
        background, self._background = self._background, []
        for task in background:  # loops with nothing in flight: cancelled, not drained
            task.cancel()
        await asyncio.gather(*tasks, *background, return_exceptions=True)

    async def close(self) -> None:
        await self.usage_limits.close()  # its streams are gone: their leases are not renewed any more
        await self.streamer.aclose()  # shared stream readers hold connections until they stop
        await self.notifier.stop()
        self.gmail.close()
        await self.engine.dispose()
