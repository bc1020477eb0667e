"""Delivers watch notifications to Pub/Sub from a background thread.

HTTP handlers only append to a queue (with an optional delay); one thread pops
every due notification and publishes them to the Pub/Sub emulator, one call
per topic, through
google-cloud-pubsub's publisher client over an insecure channel to the emulator
host (what PUBSUB_EMULATOR_HOST does). Without an emulator, a topic's push
subscriptions (`push.py`) receive them in Pub/Sub's push format instead, failed
pushes going back on the queue with backoff. Every notification is also kept
in a bounded log with its fate, so tests can inspect what was sent or dropped.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter, deque

from mailwatch_devstack.gmail_sim.push import PushSender, PushSubscriptions, backoff

QUEUED = "queued"
PUBLISHED = "published"
FAILED = "failed"
UNPUBLISHED = "unpublished"  # no Pub/Sub emulator nor push subscription for the topic: recorded only
PUSHED = "pushed"  # acknowledged by every push subscription of the topic
DROPPED_RATE_LIMIT = "dropped_rate_limit"
DROPPED_FAULT = "dropped_fault"
# Notifications published to the emulator in one call at most (Pub/Sub's limit is 1,000).
PUBLISH_BATCH = 1000


class NotificationLog:
    def __init__(self, maxlen: int = 20_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict] = deque(maxlen=maxlen)
        self._seq = itertools.count(1)
        self._counts: Counter[str] = Counter()

    def add(self, entry: dict, status: str) -> dict:
        with self._lock:
            entry["seq"] = next(self._seq)
            entry["status"] = status
            self._entries.append(entry)
            self._counts[status] += 1
        return entry

    def set_status(self, entry: dict, status: str, error: str | None = None) -> None:
        with self._lock:
            self._counts[entry["status"]] -= 1
            entry["status"] = status
            self._counts[status] += 1
            if error:
                entry["error"] = error

    def annotate(self, entry: dict, **fields) -> None:
        with self._lock:
            entry.update(fields)

    def entries(self, email: str | None = None) -> list[dict]:
        with self._lock:
            items = list(self._entries)
        if email:
            items = [e for e in items if e["emailAddress"].lower() == email.lower()]
        return [dict(e) for e in items]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in self._counts.items() if v}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._counts.clear()


class NotificationPublisher:
    def __init__(self, emulator_host: str | None, log: NotificationLog, *,
                 push_subscriptions: PushSubscriptions | None = None, push_sender: PushSender | None = None,
                 clock=time.time) -> None:
        """`clock`: the simulated time a push's retention is measured on."""
        self.emulator_host = emulator_host
        self._log = log
        self.push_subscriptions = push_subscriptions
        self._sender = push_sender
        self._clock = clock
        self._push_outcomes: dict[int, list] = {}  # log seq -> [pushes outstanding, first final error]
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, int, dict, str, bytes, dict | None]] = []
        self._order = itertools.count()
        self._generation = 0
        self._busy = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._client = None
        self._client_lock = threading.Lock()

    @property
    def configured(self) -> bool:
        """Whether topics exist for real: on the emulator, or as push subscriptions' topics."""
        return bool(self.emulator_host) or self._pushing

    @property
    def _pushing(self) -> bool:
        return not self.emulator_host and self.push_subscriptions is not None and self.push_subscriptions.active

    def _publisher(self):
        with self._client_lock:
            if self._client is None:
                import grpc
                from google.pubsub_v1.services.publisher import PublisherClient
                from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

                channel = grpc.insecure_channel(self.emulator_host)
                self._client = PublisherClient(transport=PublisherGrpcTransport(channel=channel))
            return self._client

    def topic_exists(self, topic: str) -> bool:
        """Blocking: ask the emulator whether the topic exists (call it off the event loop)."""
        if self._pushing:
            return bool(self.push_subscriptions.for_topic(topic))
        from google.api_core import exceptions

        try:
            self._publisher().get_topic(topic=topic, timeout=10)
            return True
        except exceptions.NotFound:
            return False

    def start(self) -> None:
        with self._cond:
            self._stopping = False
        self._thread = threading.Thread(target=self._run, name="gmail-sim-publisher", daemon=True)
        self._thread.start()

    def submit(self, entry: dict, topic: str, data: bytes, delay: float = 0.0, push: dict | None = None) -> None:
        """Queue a notification; `push` is a retry of one push (subscription, message, attempt, deadline)."""
        with self._cond:
            due = time.monotonic() + max(0.0, delay)
            heapq.heappush(self._heap, (due, next(self._order), self._generation, entry, topic, data, push))
            self._cond.notify()

    def clear(self) -> None:
        """Forget queued notifications (used by reset)."""
        with self._cond:
            self._heap.clear()
            self._push_outcomes.clear()
            self._generation += 1
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued notification (delays included) has been handled."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + self._busy

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    if self._heap:
                        wait = self._heap[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._stopping:
                    return
                due_now = self._take_due()
                self._busy += 1
            try:
                self._deliver_all(due_now)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _take_due(self) -> list[tuple]:
        """Every notification due now (with the lock held), at most PUBLISH_BATCH of them."""
        now = time.monotonic()
        taken: list[tuple] = []
        while self._heap and self._heap[0][0] <= now and len(taken) < PUBLISH_BATCH:
            item = heapq.heappop(self._heap)
            if item[2] == self._generation:
                taken.append(item)
        return taken

    def _deliver_all(self, items: list[tuple]) -> None:
        """Pushes one by one; to the emulator, one publish call per topic for everything due
        (a call per notification, from one thread, falls behind a busy stack's
        notifications, which then queue for seconds: Gmail's own publishing has
        no such queue)."""
        by_topic: dict[str, list[tuple]] = {}
        for item in items:
            due, _, _, entry, topic, data, push = item
            if push is not None or self._pushing or not self.configured:
                self._deliver(entry, topic, data, push)
            else:
                by_topic.setdefault(topic, []).append(item)
        for topic, group in by_topic.items():
            self._publish(topic, group)

    def _deliver(self, entry: dict, topic: str, data: bytes, push: dict | None = None) -> None:
        if push is not None:
            self._push(entry, topic, data, push)
            return
        if self._pushing:
            self._push_to_subscriptions(entry, topic, data)
            return
        self._log.set_status(entry, UNPUBLISHED)

    def _publish(self, topic: str, items: list[tuple]) -> None:
        from google.pubsub_v1.types import PubsubMessage

        try:
            self._publisher().publish(topic=topic, messages=[PubsubMessage(data=item[5]) for item in items],
                                      timeout=30)
        except Exception as exc:  # noqa: BLE001 - any publish failure is recorded, never raised
            for item in items:
                self._log.set_status(item[3], FAILED, f"{type(exc).__name__}: {exc}")
            return
        published = time.monotonic()
        for due, _, _, entry, *_ in items:
            # how long it waited behind other notifications, plus the publish call
            self._log.annotate(entry, publishedAfterSeconds=round(published - due, 6))
            self._log.set_status(entry, PUBLISHED)

    def _push_to_subscriptions(self, entry: dict, topic: str, data: bytes) -> None:
        subscriptions = self.push_subscriptions.for_topic(topic)
        if not subscriptions:
            self._log.set_status(entry, UNPUBLISHED)
            return
        message = self._sender.new_message(data)  # one id and publish time for every copy and retry
        self._log.annotate(entry, messageId=message["messageId"], attempts=0)
        with self._cond:
            self._push_outcomes[entry["seq"]] = [len(subscriptions), None]
        published = self._clock()
        for subscription in subscriptions:
            self._push(entry, topic, data, {"subscription": subscription, "message": message, "attempt": 1,
                                            "published": published})

    def _push(self, entry: dict, topic: str, data: bytes, push: dict) -> None:
        # A retry goes where the subscription points now: like Pub/Sub after
        # modifyPushConfig (the dev stack re-points it at each start).
        subscription = self.push_subscriptions.get(push["subscription"].name)
        if subscription is None:
            self._push_finished(entry, f"{push['subscription'].name}: subscription deleted")
            return
        push = {**push, "subscription": subscription}
        error = self._sender.send(subscription, push["message"])
        self._log.annotate(entry, attempts=entry.get("attempts", 0) + 1, **({"lastError": error} if error else {}))
        if error is None:
            self._push_finished(entry, None)
            return
        delay = backoff(push["attempt"])
        # Retried for as long as the subscription retains the message (Pub/Sub's rule).
        if self._clock() + delay > push["published"] + subscription.retention_seconds:
            self._push_finished(entry, f"{push['subscription'].name}: {error}")
            return
        self.submit(entry, topic, data, delay, {**push, "attempt": push["attempt"] + 1})

    def _push_finished(self, entry: dict, error: str | None) -> None:
        with self._cond:
            outcome = self._push_outcomes.get(entry["seq"])
            if outcome is None:  # cleared by a reset meanwhile
                return
            outcome[0] -= 1
            outcome[1] = outcome[1] or error
            if outcome[0] > 0:
                return
            del self._push_outcomes[entry["seq"]]
        self._log.set_status(entry, FAILED if outcome[1] else PUSHED, outcome[1])

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._client_lock:
            if self._client is not None:
                self._client.transport.close()
                self._client = None
        if self._sender is not None:
            self._sender.close()
