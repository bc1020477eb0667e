"""Prometheus metrics for ingest. Labels are bounded enums — never an address or a message id."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from mailwatch.ingest.decode import MalformedReason

SOURCES = ("pull", "push")

# source: "pull" | "push"
# outcome: "accepted" (an ACTIVE mailbox recorded it) | "unknown_mailbox" |
#          "inactive_mailbox" (STOPPED / AUTH_FAILED) | "malformed"
MESSAGES = Counter(
    "mailwatch_ingest_messages_total",
    "Pub/Sub notifications handled (and acknowledged), by outcome.",
    ["source", "outcome"],
)
MALFORMED = Counter(
    "mailwatch_ingest_malformed_total",
    "Notifications that could not be decoded, by reason (see mailwatch.ingest.decode.MalformedReason).",
    ["source", "reason"],
)
MALFORMED_DROPPED = Counter(
    "mailwatch_malformed_notifications_dropped_total",
    "Malformed notifications not kept for inspection, by why: a redelivery of one already kept"
    " (duplicate), over the per-source cap (cap), older than retention (expired).",
    ["reason"],  # "duplicate" | "cap" | "expired"
)
MARKED_DUE = Counter(
    "mailwatch_ingest_mailboxes_marked_due_total",
    "Mailbox due-marks written (many notifications for one mailbox in a batch count once).",
    ["source"],
)
WRITE_FAILURES = Counter(
    "mailwatch_ingest_write_failures_total",
    "Batches whose database write failed; their messages were not acknowledged.",
    ["source"],
)
ACK_FAILURES = Counter(
    "mailwatch_ingest_ack_failures_total",
    "Acknowledge / nack calls to Pub/Sub that failed (the messages will be redelivered).",
    ["kind"],  # "ack" | "nack"
)
PULL_FAILURES = Counter(
    "mailwatch_ingest_pull_failures_total",
    "Pull calls to Pub/Sub that failed.",
)
PUSH_REJECTED = Counter(
    "mailwatch_ingest_push_rejected_total",
    "Push requests refused before processing, by reason.",
    ["reason"],  # "missing_token" | "invalid_token" | "wrong_audience" | "wrong_issuer" | "wrong_email" | "email_not_verified" | "certs_unavailable" | "connection_lost"
)
BATCH_SECONDS = Histogram(
    "mailwatch_ingest_batch_write_seconds",
    "Time to write one batch (one transaction) to Postgres.",
    ["source"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "mailwatch_ingest_batch_messages",
    "Messages per pulled batch.",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000),
)

# Every label combination of the counters the alerts watch exists from start-up at 0: a series
# that first appears at 1 shows Prometheus no increase, so the first malformed notification or
# failed write would not fire MailwatchMalformedNotifications / MailwatchIngestErrors.
for _source in SOURCES:
    WRITE_FAILURES.labels(_source)
    for _reason in MalformedReason:
        MALFORMED.labels(_source, _reason.value)
