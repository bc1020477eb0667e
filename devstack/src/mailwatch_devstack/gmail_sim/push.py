"""Pub/Sub push delivery without the Pub/Sub emulator (and so without Java).

When no emulator is configured, the simulator plays the part of Pub/Sub for
push subscriptions registered through its control API (the shape of Pub/Sub's
`Subscription` resource: `name`, `topic`, `pushConfig.pushEndpoint`,
`pushConfig.oidcToken.{serviceAccountEmail, audience}`). A notification
published to a topic is POSTed to each of its push subscriptions in Pub/Sub's
push format::

    {"message": {"data": <base64>, "messageId", "message_id", "publishTime",
                 "publish_time", "attributes"?}, "subscription": <name>}

with `Authorization: Bearer <ID token>` signed by the simulator's own issuer
(`oidc.OidcIssuer`) when the subscription has an `oidcToken`. As with Pub/Sub,
102/200/201/202/204 acknowledge; anything else (or no answer) is retried with
exponential backoff for as long as the subscription retains messages
(`messageRetentionDuration`: Pub/Sub's default and longest 7 days, at least 10 minutes),
on the simulator's clock so a test can let days pass.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
import re
import secrets
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from mailwatch_devstack.gmail_sim.oidc import OidcIssuer

ACK_STATUSES = frozenset({102, 200, 201, 202, 204})
_SUBSCRIPTION = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")
_TOPIC = re.compile(r"^projects/[^/]+/topics/[^/]+$")
MIN_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 60.0
DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600  # Pub/Sub's default messageRetentionDuration
MIN_RETENTION_SECONDS, MAX_RETENTION_SECONDS = 600, DEFAULT_RETENTION_SECONDS  # a subscription's bounds
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


@dataclass(frozen=True)
class PushSubscription:
    name: str
    topic: str
    endpoint: str
    service_account_email: str | None = None  # None: requests carry no token
    audience: str | None = None  # None: the endpoint URL, as Pub/Sub defaults it
    retention_seconds: float = DEFAULT_RETENTION_SECONDS  # how long an unacknowledged message is retried

    @classmethod
    def from_json(cls, data: dict) -> "PushSubscription":
        """Parse the Subscription resource's fields; ValueError names what is wrong."""
        name, topic = data.get("name"), data.get("topic")
        if not isinstance(name, str) or not _SUBSCRIPTION.match(name):
            raise ValueError("'name' must be projects/PROJECT/subscriptions/NAME")
        if not isinstance(topic, str) or not _TOPIC.match(topic):
            raise ValueError("'topic' must be projects/PROJECT/topics/NAME")
        config = data.get("pushConfig")
        if not isinstance(config, dict):
            raise ValueError("'pushConfig' is required")
        endpoint = config.get("pushEndpoint")
        parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("'pushConfig.pushEndpoint' must be an http(s) URL")
        retention = _retention(data.get("messageRetentionDuration"))
        oidc = config.get("oidcToken")
        if oidc is None:
            return cls(name, topic, endpoint, retention_seconds=retention)
        email = oidc.get("serviceAccountEmail") if isinstance(oidc, dict) else None
        if not isinstance(email, str) or "@" not in email:
            raise ValueError("'pushConfig.oidcToken.serviceAccountEmail' must be an email address")
        audience = oidc.get("audience") or None
        if audience is not None and not isinstance(audience, str):
            raise ValueError("'pushConfig.oidcToken.audience' must be a string")
        return cls(name, topic, endpoint, email, audience, retention)

    def to_json(self) -> dict:
        config: dict = {"pushEndpoint": self.endpoint}
        if self.service_account_email:
            config["oidcToken"] = {"serviceAccountEmail": self.service_account_email,
                                   "audience": self.audience or self.endpoint}
        return {"name": self.name, "topic": self.topic, "pushConfig": config,
                "messageRetentionDuration": f"{self.retention_seconds:g}s"}


def _retention(value) -> float:
    """Pub/Sub's `messageRetentionDuration` ("604800s"), within its bounds; default 7 days."""
    if value is None:
        return DEFAULT_RETENTION_SECONDS
    match = _DURATION.match(value) if isinstance(value, str) else None
    seconds = float(match.group(1)) if match else -1
    if not MIN_RETENTION_SECONDS <= seconds <= MAX_RETENTION_SECONDS:
        raise ValueError("'messageRetentionDuration' must be a duration such as \"604800s\", "
                         "from 10 minutes to 7 days")
    return seconds


class PushSubscriptions:
    """The registry of push subscriptions (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, PushSubscription] = {}

    def put(self, subscription: PushSubscription) -> None:
        with self._lock:
            self._by_name[subscription.name] = subscription

    def get(self, name: str) -> PushSubscription | None:
        with self._lock:
            return self._by_name.get(name)

    def remove(self, name: str) -> bool:
        with self._lock:
            return self._by_name.pop(name, None) is not None

    def all(self) -> list[PushSubscription]:
        with self._lock:
            return list(self._by_name.values())

    def for_topic(self, topic: str) -> list[PushSubscription]:
        return [s for s in self.all() if s.topic == topic]

    @property
    def active(self) -> bool:
        with self._lock:
            return bool(self._by_name)

    def clear(self) -> None:
        with self._lock:
            self._by_name.clear()


def backoff(attempt: int) -> float:
    """Seconds before retry number `attempt` (1-based): exponential, capped."""
    return min(MAX_BACKOFF_SECONDS, MIN_BACKOFF_SECONDS * 2 ** (attempt - 1))


class PushSender:
    """POSTs one message to one push endpoint (blocking; called from the publisher thread)."""

    def __init__(self, issuer: OidcIssuer, timeout: float = 30.0) -> None:
        import requests

        self.issuer = issuer
        self._timeout = timeout
        self._session = requests.Session()
        self._ids = itertools.count(secrets.randbelow(10**15) + 10**15)

    def new_message(self, data: bytes) -> dict:
        """The Pub/Sub message for `data`, published now (id and time fixed across retries)."""
        message_id = str(next(self._ids))
        published = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        # Pub/Sub sends both spellings of the id and the time.
        return {"data": base64.b64encode(data).decode("ascii"), "messageId": message_id,
                "message_id": message_id, "publishTime": published, "publish_time": published}

    def send(self, subscription: PushSubscription, message: dict) -> str | None:
        """None when the endpoint acknowledged; otherwise why not (for the log)."""
        import requests

        headers = {"Content-Type": "application/json"}
        if subscription.service_account_email:
            token = self.issuer.id_token(audience=subscription.audience or subscription.endpoint,
                                         email=subscription.service_account_email,
                                         subject=_unique_id(subscription.service_account_email))
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self._session.post(subscription.endpoint, json={"message": message,
                                                                       "subscription": subscription.name},
                                          headers=headers, timeout=self._timeout)
        except requests.RequestException as exc:
            return f"{type(exc).__name__}: {exc}"
        with response:
            if response.status_code in ACK_STATUSES:
                return None
            return f"HTTP {response.status_code}"

    def close(self) -> None:
        self._session.close()


def _unique_id(email: str) -> str:
    """A service account's stable numeric id (Google's `sub` for it is a 21-digit number)."""
    return str(10**20 + int(hashlib.sha256(email.encode()).hexdigest(), 16) % 10**20)
