"""Delivers watch notifications to Pub/Sub from a background thread.

HTTP handlers only append to a queue (with an optional delay); one thread pops
due notifications and publishes them to the Pub/Sub emulator through
google-cloud-pubsub's publisher client over an insecure channel to the emulator
host (what PUBSUB_EMULATOR_HOST does). Every notification is also kept in a
bounded log with its fate, so tests can inspect what was sent or dropped.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter, deque

QUEUED = "queued"
PUBLISHED = "published"
FAILED = "failed"
UNPUBLISHED = "unpublished"  # no Pub/Sub emulator configured: recorded only
DROPPED_RATE_LIMIT = "dropped_rate_limit"
DROPPED_FAULT = "dropped_fault"


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
    def __init__(self, emulator_host: str | None, log: NotificationLog) -> None:
        self.emulator_host = emulator_host
        self._log = log
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, int, dict, str, bytes]] = []
        self._order = itertools.count()
        self._generation = 0
        self._busy = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._client = None
        self._client_lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self.emulator_host)

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

    def submit(self, entry: dict, topic: str, data: bytes, delay: float = 0.0) -> None:
        with self._cond:
            due = time.monotonic() + max(0.0, delay)
            heapq.heappush(self._heap, (due, next(self._order), self._generation, entry, topic, data))
            self._cond.notify()

    def clear(self) -> None:
        """Forget queued notifications (used by reset)."""
        with self._cond:
            self._heap.clear()
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
                _, _, generation, entry, topic, data = heapq.heappop(self._heap)
                if generation != self._generation:
                    continue
                self._busy += 1
            try:
                self._deliver(entry, topic, data)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _deliver(self, entry: dict, topic: str, data: bytes) -> None:
        if not self.configured:
            self._log.set_status(entry, UNPUBLISHED)
            return
        from google.pubsub_v1.types import PubsubMessage

        try:
            self._publisher().publish(topic=topic, messages=[PubsubMessage(data=data)], timeout=30)
        except Exception as exc:  # noqa: BLE001 - any publish failure is recorded, never raised
            self._log.set_status(entry, FAILED, f"{type(exc).__name__}: {exc}")
        else:
            self._log.set_status(entry, PUBLISHED)

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
