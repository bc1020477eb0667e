"""Ingest: Gmail notifications from Pub/Sub into durable "due for sync" marks.

- `PullIngestor` — batched pull from the configured subscription(s) (the default).
- `create_push_app` — the alternative: an aiohttp endpoint for push subscriptions,
  with the push subscription's OIDC token verified (`PushAuth`).
- `decode` — pure decoding/validation of Gmail's `{"emailAddress", "historyId"}`.

Both paths share one write (`record.record_batch`): the batch's notifications
are collapsed to the highest history id per address and recorded, together
with any malformed messages, in one transaction before anything is acked.
"""

from mailwatch.ingest.decode import MalformedNotification, MalformedReason, Notification, decode_notification
from mailwatch.ingest.pull import PullIngestor
from mailwatch.ingest.push import STATS_KEY, OidcVerifier, PushAuth, create_push_app
from mailwatch.ingest.record import BatchResult, IngestStats, Received, record_batch

__all__ = [
    "BatchResult",
    "IngestStats",
    "MalformedNotification",
    "MalformedReason",
    "Notification",
    "OidcVerifier",
    "PullIngestor",
    "PushAuth",
    "Received",
    "STATS_KEY",
    "create_push_app",
    "decode_notification",
    "record_batch",
]
