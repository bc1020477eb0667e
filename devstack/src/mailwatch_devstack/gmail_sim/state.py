"""The simulator's whole state and the rules that tie its parts together.

One `SimState` per simulator: the clock, the mailboxes, the OAuth authority,
fault injection, counters, and the notification path (watch filter → 1/s/user
limit → injected drop/delay → background publisher). Every mutation goes
through here under one lock, so the HTTP handlers, the control API and the
publisher thread see a consistent picture.
"""

from __future__ import annotations

import json
import random
import threading

from mailwatch_devstack.gmail_sim.auth import DEFAULT_PROJECT, TokenAuthority
from mailwatch_devstack.gmail_sim.clock import SimClock
from mailwatch_devstack.gmail_sim.concurrency import ConcurrencyLimiter
from mailwatch_devstack.gmail_sim.errors import GmailError, backend_error
from mailwatch_devstack.gmail_sim.faults import FaultInjector
from mailwatch_devstack.gmail_sim.history import HistoryRecord
from mailwatch_devstack.gmail_sim.latency import LatencyInjector
from mailwatch_devstack.gmail_sim.model import Mailbox, Watch
from mailwatch_devstack.gmail_sim.oidc import OidcIssuer
from mailwatch_devstack.gmail_sim.publisher import (
    DROPPED_FAULT,
    DROPPED_RATE_LIMIT,
    QUEUED,
    NotificationLog,
    NotificationPublisher,
)
from mailwatch_devstack.gmail_sim.push import PushSender, PushSubscriptions
from mailwatch_devstack.gmail_sim.quota import CallCounters
from mailwatch_devstack.gmail_sim.ratelimit import NotificationRateLimiter
from mailwatch_devstack.gmail_sim.refusals import Refusals
from mailwatch_devstack.gmail_sim.unit_quota import PROJECT_UNITS_PER_MINUTE, USER_UNITS_PER_MINUTE, UnitQuota

WEEK_SECONDS = 7 * 24 * 3600
WATCH_LIFETIME_MS = WEEK_SECONDS * 1000


class SimState:
    def __init__(self, pubsub_emulator_host: str | None = None, *, default_project: str = DEFAULT_PROJECT) -> None:
        self.lock = threading.RLock()
        self.default_project = default_project  # survives reset(): it is how the simulator was started
        self.clock = SimClock()
        self.mailboxes: dict[str, Mailbox] = {}
        self.refusals = Refusals()
        self.aliases: dict[str, str] = {}  # alias (lower-cased) -> canonical address (lower-cased)
        self.watch_refusals: set[str] = set()  # mailboxes (lower-cased) whose users.watch fails (500)
        # Topics whose IAM policy does not let gmail-api-push@system.gserviceaccount.com publish
        # (the emulator has no IAM: a topic allows Gmail unless told otherwise here).
        self.unpublishable_topics: set[str] = set()
        self.auth = TokenAuthority(self.clock, self.canonical, refusals=self.refusals)
        self.faults = FaultInjector()
        self.latency = LatencyInjector()
        self.concurrency = ConcurrencyLimiter()
        self.user_quota = UnitQuota("userQuotaUnitsPerMinute", USER_UNITS_PER_MINUTE)
        self.project_quota = UnitQuota("projectQuotaUnitsPerMinute", PROJECT_UNITS_PER_MINUTE)
        self.limiter = NotificationRateLimiter()
        self.counters = CallCounters()
        self.log = NotificationLog()
        self.issuer = OidcIssuer()  # signs push tokens; its URL is the simulator's, set once it listens
        self.push_subscriptions = PushSubscriptions()
        self.publisher = NotificationPublisher(pubsub_emulator_host, self.log,
                                               push_subscriptions=self.push_subscriptions,
                                               push_sender=PushSender(self.issuer), clock=self.clock.now)
        self._configure_defaults()

    def _configure_defaults(self) -> None:
        self.seed = 0
        self._rng = random.Random(self.seed)
        self.history_retention: float | None = WEEK_SECONDS
        self.history_id_as_number = True  # Gmail's push payload carries historyId as a JSON number
        # A batch's parts are in flight together, each holding a concurrency slot until the batch ends.
        self.batch_parts_concurrent = True
        # History's messagesAdded / labelsAdded / labelsRemoved messages carry the message's labels
        # as they are when the page is served, as real Gmail sends them (the discovery document
        # allows them to be absent: off leaves only id and threadId).
        self.history_label_ids = True
        # For this long after a change, messages.get answers 404 for the message the history
        # already lists (Gmail's notification can outrun its own read path).
        self.message_visibility_delay = 0.0
        # Every history.list page with records is preceded by one with a nextPageToken and no history.
        self.empty_history_pages = False

    def reset(self) -> None:
        with self.lock:
            self.publisher.clear()
            self.push_subscriptions.clear()
            self.mailboxes.clear()
            self.aliases.clear()
            self.watch_refusals.clear()
            self.unpublishable_topics.clear()
            self.latency.clear()
            self.clock.reset()
            self.auth.reset()
            self.faults.reset()
            self.concurrency.reset()
            self.user_quota.reset()
            self.project_quota.reset()
            self.refusals.reset()
            self.limiter.reset()
            self.counters.reset()
            self.log.clear()
            self._configure_defaults()

    def configure(self, *, history_retention_seconds=..., token_lifetime_seconds=None,
                  notification_history_id_type=None, seed=None, concurrent_requests_per_user=...,
                  user_quota_units_per_minute=..., project_quota_units_per_minute=...,
                  batch_parts_concurrent=None, history_label_ids=None, message_visibility_delay_seconds=None,
                  empty_history_pages=None) -> dict:
        with self.lock:
            for name, value in (("batchPartsConcurrent", batch_parts_concurrent),
                                ("historyLabelIds", history_label_ids), ("emptyHistoryPages", empty_history_pages)):
                if value is not None and not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
            if message_visibility_delay_seconds is not None:
                if isinstance(message_visibility_delay_seconds, bool) or float(message_visibility_delay_seconds) < 0:
                    raise ValueError("messageVisibilityDelaySeconds must be a non-negative number")
                self.message_visibility_delay = float(message_visibility_delay_seconds)
            if batch_parts_concurrent is not None:
                self.batch_parts_concurrent = batch_parts_concurrent
            if history_label_ids is not None:
                self.history_label_ids = history_label_ids
            if empty_history_pages is not None:
                self.empty_history_pages = empty_history_pages
            if concurrent_requests_per_user is not ...:
                self.concurrency.set_limit(concurrent_requests_per_user)
            if user_quota_units_per_minute is not ...:
                self.user_quota.set_limit(user_quota_units_per_minute)
            if project_quota_units_per_minute is not ...:
                self.project_quota.set_limit(project_quota_units_per_minute)
            if history_retention_seconds is not ...:
                if history_retention_seconds is not None and float(history_retention_seconds) <= 0:
                    raise ValueError("historyRetentionSeconds must be positive or null")
                self.history_retention = None if history_retention_seconds is None else float(history_retention_seconds)
            if token_lifetime_seconds is not None:
                if int(token_lifetime_seconds) < 1:
                    raise ValueError("tokenLifetimeSeconds must be at least 1")
                self.auth.token_lifetime = int(token_lifetime_seconds)
            if notification_history_id_type is not None:
                if notification_history_id_type not in ("number", "string"):
                    raise ValueError("notificationHistoryIdType must be 'number' or 'string'")
                self.history_id_as_number = notification_history_id_type == "number"
            if seed is not None:
                self.seed = int(seed)
                self._rng = random.Random(self.seed)
                self.faults.seed(self.seed)
            return self.config()

    def config(self) -> dict:
        return {
            "historyRetentionSeconds": self.history_retention,
            "tokenLifetimeSeconds": self.auth.token_lifetime,
            "notificationHistoryIdType": "number" if self.history_id_as_number else "string",
            "seed": self.seed,
            "concurrentRequestsPerUser": self.concurrency.limit,
            "userQuotaUnitsPerMinute": self.user_quota.units_per_minute,
            "projectQuotaUnitsPerMinute": self.project_quota.units_per_minute,
            "batchPartsConcurrent": self.batch_parts_concurrent,
            "historyLabelIds": self.history_label_ids,
            "messageVisibilityDelaySeconds": self.message_visibility_delay,
            "emptyHistoryPages": self.empty_history_pages,
            "pubsubEmulatorHost": self.publisher.emulator_host,
            "defaultProjectId": self.default_project,
        }

    # -- mailboxes -----------------------------------------------------------------------------
    def canonical(self, email: str) -> str | None:
        """The mailbox's primary address for an address or one of its aliases (lower-cased), else None."""
        key = email.lower()
        if key in self.mailboxes:
            return key
        return self.aliases.get(key)

    def has_mailbox(self, email: str) -> bool:
        return self.canonical(email) is not None

    def mailbox(self, email: str) -> Mailbox:
        """The mailbox an address (primary or alias) delivers to; KeyError if none."""
        key = self.canonical(email)
        if key is None:
            raise KeyError(email)
        return self.mailboxes[key]

    def create_mailbox(self, email: str, history_id: int | None = None) -> Mailbox:
        if not isinstance(email, str) or "@" not in email or email.strip() != email:
            raise ValueError(f"not an email address: {email!r}")
        with self.lock:
            if email.lower() in self.aliases:
                raise ValueError(f"{email} is an alias of {self.aliases[email.lower()]}")
            existing = self.mailboxes.get(email.lower())
            if existing is not None:
                return existing
            start = int(history_id) if history_id is not None else self._rng.randrange(1_000, 1_000_000)
            if start < 1:
                raise ValueError("historyId must be positive")
            mailbox = Mailbox.create(email, start, self._rng)
            self.mailboxes[email.lower()] = mailbox
            return mailbox

    def add_aliases(self, mailbox: Mailbox, aliases: list[str]) -> list[str]:
        """Give a mailbox alias addresses (mail to them lands in it; Gmail names the primary)."""
        with self.lock:
            for alias in aliases:
                if not isinstance(alias, str) or "@" not in alias or alias.strip() != alias:
                    raise ValueError(f"not an email address: {alias!r}")
                key = alias.lower()
                owner = self.canonical(key)
                if owner is not None and owner != mailbox.email.lower():
                    raise ValueError(f"{alias} already belongs to {owner}")
                if key == mailbox.email.lower():
                    raise ValueError(f"{alias} is the mailbox's own address")
            for alias in aliases:
                self.aliases[alias.lower()] = mailbox.email.lower()
            return self.aliases_of(mailbox)

    def aliases_of(self, mailbox: Mailbox) -> list[str]:
        return sorted(a for a, owner in self.aliases.items() if owner == mailbox.email.lower())

    def set_gmail_publisher(self, topic: str, granted: bool) -> None:
        """Grant (or take away) Gmail's publisher role on a topic: users.watch on it is refused without."""
        with self.lock:
            (self.unpublishable_topics.discard if granted else self.unpublishable_topics.add)(topic)

    def gmail_may_publish(self, topic: str) -> bool:
        with self.lock:
            return topic not in self.unpublishable_topics

    def prune_history(self, mailbox: Mailbox) -> None:
        if self.history_retention is not None:
            mailbox.history.expire_older_than(self.clock.now() - self.history_retention)

    # -- notifications -------------------------------------------------------------------------
    def watch(self, mailbox: Mailbox, project_id: str, topic: str, label_ids, behavior: str) -> Watch:
        """Start or replace the calling project's watch on this user.

        Gmail allows one push client per user per developer project: the same
        topic again replaces the filter; another topic while a watch is live
        is refused until `users.stop`.
        """
        with self.lock:
            if mailbox.email.lower() in self.watch_refusals:
                raise backend_error()  # as when Gmail cannot reach Pub/Sub: a renewal that keeps failing
            now_ms = self.clock.now_ms()
            current = mailbox.watches.get(project_id)
            if current is not None and current.live(now_ms) and current.topic_name != topic:
                raise GmailError(400, "Only one user push notification client allowed per developer "
                                      "(call /stop then try again)", "invalidArgument")
            watch = Watch(topic, frozenset(label_ids), behavior, mailbox.history_id, now_ms + WATCH_LIFETIME_MS)
            mailbox.watches[project_id] = watch
            # "A successful watch immediately sends one notification."
            self._send(mailbox, watch)
            return watch

    def expire_watches(self, mailbox: Mailbox, project_id: str | None = None) -> None:
        """Let the mailbox's watch (the project's, or every one) lapse now: notifications stop."""
        with self.lock:
            now_ms = self.clock.now_ms()
            for project, watch in mailbox.watches.items():
                if project_id in (None, project):
                    watch.expiration_ms = min(watch.expiration_ms, now_ms)

    def refuse_watches(self, mailbox: Mailbox, refuse: bool) -> None:
        """Make every users.watch of the mailbox (a renewal too) fail with 500 backendError, or stop that."""
        with self.lock:
            (self.watch_refusals.add if refuse else self.watch_refusals.discard)(mailbox.email.lower())

    def stop(self, mailbox: Mailbox, project_id: str) -> None:
        """End the project's watch: for every caller of that project, not only this one."""
        with self.lock:
            mailbox.watches.pop(project_id, None)

    def live_watches(self, mailbox: Mailbox) -> list[Watch]:
        now_ms = self.clock.now_ms()
        return [watch for watch in mailbox.watches.values() if watch.live(now_ms)]

    def changed(self, mailbox: Mailbox, records: list[HistoryRecord]) -> None:
        """Called after every change: notify each live watch whose filter matches."""
        if not records:
            return
        for watch in self.live_watches(mailbox):
            if any(watch.matches(record) for record in records):
                self._send(mailbox, watch)

    def _send(self, mailbox: Mailbox, watch: Watch) -> None:
        now = self.clock.now()
        history_id = mailbox.history_id
        entry = {"emailAddress": mailbox.email, "historyId": history_id, "topic": watch.topic_name, "time": now}
        # The 1/s limit is per watched user and push client: one project's
        # burst does not silence another project's watch.
        if not self.limiter.allow(f"{mailbox.email}|{watch.project_id}", now):
            self.log.add(entry, DROPPED_RATE_LIMIT)
            return
        if self.faults.drop_notification(mailbox.email):
            self.log.add(entry, DROPPED_FAULT)
            return
        payload = {"emailAddress": mailbox.email,
                   "historyId": history_id if self.history_id_as_number else str(history_id)}
        data = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        self.log.add(entry, QUEUED)
        self.publisher.submit(entry, watch.topic_name, data, self.faults.notification_delay(mailbox.email))
