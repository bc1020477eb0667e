"""Turn a batch of received Pub/Sub messages into one durable write.

Shared by pull and push: decode every message, collapse valid notifications
to the highest history id per address, then in ONE transaction record them
and keep the malformed ones (`store.notifications.write_batch`). Only after that commit may the
caller acknowledge; if it raises, nothing may be acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

from mailwatch.ingest import metrics
from mailwatch.ingest.decode import (
    MalformedNotification,
    MalformedReason,
    Notification,
    collapse,
    decode_notification,
    truncate,
)
from mailwatch.clock import Clock, SystemClock
from mailwatch.store.db import Sessions
from mailwatch.store.notifications import MalformedRecord, write_batch


_SYSTEM_CLOCK = SystemClock()


@dataclass(frozen=True)
class Received:
    """One Pub/Sub message, whichever way it arrived."""

    message_id: str | None
    data: bytes | None  # None: the transport could not even produce bytes (see `error`)
    attributes: dict[str, str] = field(default_factory=dict)
    error: MalformedReason | None = None  # a decoding failure found by the transport (push base64)
    raw_data: bytes | None = None  # what to store when `data` is None


@dataclass
class IngestStats:
    """Per-instance counts (the Prometheus counters are process-wide)."""

    received: int = 0
    batches: int = 0
    accepted: int = 0  # recorded on at least one ACTIVE mailbox
    unknown: int = 0
    inactive: int = 0  # STOPPED / AUTH_FAILED mailboxes only
    malformed: int = 0
    marked_due: int = 0  # mailbox due-marks written (per mailbox per batch)
    acked: int = 0
    nacked: int = 0
    write_failures: int = 0
    ack_failures: int = 0
    pull_failures: int = 0

    def snapshot(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class BatchResult:
    accepted: int = 0
    unknown: int = 0
    inactive: int = 0
    malformed: int = 0
    marked_due: int = 0
    malformed_reasons: tuple[str, ...] = ()
    malformed_duplicates: int = 0  # redelivered malformed messages not stored again
    malformed_over_cap: int = 0  # older kept ones deleted by the per-source cap


def classify(messages: Sequence[Received], source: str) -> tuple[list[Notification | None], list[MalformedRecord]]:
    """Decode each message: a Notification, or None plus a MalformedRecord (pure)."""
    decoded: list[Notification | None] = []
    malformed: list[MalformedRecord] = []
    for message in messages:
        reason = message.error
        notification = None
        if reason is None and message.data is not None:
            try:
                notification = decode_notification(message.data)
            except MalformedNotification as exc:
                reason = exc.reason
        elif reason is None:
            reason = MalformedReason.BAD_ENVELOPE
        decoded.append(notification)
        if notification is None:
            malformed.append(
                MalformedRecord(
                    source=source,
                    reason=reason.value,
                    pubsub_message_id=message.message_id,
                    data=truncate(message.data if message.data is not None else message.raw_data),
                    attributes=dict(message.attributes),
                )
            )
    return decoded, malformed


async def record_batch(
    sessions: Sessions,
    messages: Sequence[Received],
    *,
    source: str,
    source_label: str,
    stats: IngestStats | None = None,
    timeout: float | None = None,
    clock: Clock | None = None,
    on_marked_due: Callable[[], None] | None = None,
) -> BatchResult:
    """Decode and durably record `messages` in one transaction; raise if that fails.

    `source` is stored with malformed rows (subscription path or "push");
    `source_label` ("pull" / "push") is the bounded metric label. Counters move
    only after the commit, so a failed batch that is redelivered is not
    counted twice. `on_marked_due` is called after the commit when a mailbox
    became due, so a sync worker in this process starts at once.
    """
    decoded, malformed = classify(messages, source)
    latest = collapse(n for n in decoded if n is not None)
    now = (clock or _SYSTEM_CLOCK).now()

    started = time.perf_counter()
    write = write_batch(sessions, latest, malformed, now=now)
    outcomes, kept = await asyncio.wait_for(write, timeout) if timeout else await write
    metrics.BATCH_SECONDS.labels(source_label).observe(time.perf_counter() - started)

    accepted = unknown = inactive = 0
    for notification in decoded:
        if notification is None:
            continue
        outcome = outcomes.get(notification.email_address)
        if outcome is not None and outcome.active:
            accepted += 1
        elif outcome is not None and outcome.inactive:
            inactive += 1
        else:
            unknown += 1
    marked_due = sum(o.marked_due for o in outcomes.values())
    result = BatchResult(
        accepted=accepted,
        unknown=unknown,
        inactive=inactive,
        malformed=len(malformed),
        marked_due=marked_due,
        malformed_reasons=tuple(m.reason for m in malformed),
        malformed_duplicates=kept.duplicates,
        malformed_over_cap=kept.over_cap,
    )
    _count(result, source_label, stats)
    if marked_due and on_marked_due is not None:
        on_marked_due()
    return result


def _count(result: BatchResult, source_label: str, stats: IngestStats | None) -> None:
    for outcome, value in (
        ("accepted", result.accepted),
        ("unknown_mailbox", result.unknown),
        ("inactive_mailbox", result.inactive),
        ("malformed", result.malformed),
    ):
        if value:
            metrics.MESSAGES.labels(source_label, outcome).inc(value)
    for reason in result.malformed_reasons:
        metrics.MALFORMED.labels(source_label, reason).inc()
    if result.malformed_duplicates:
        metrics.MALFORMED_DROPPED.labels("duplicate").inc(result.malformed_duplicates)
    if result.malformed_over_cap:
        metrics.MALFORMED_DROPPED.labels("cap").inc(result.malformed_over_cap)
    if result.marked_due:
        metrics.MARKED_DUE.labels(source_label).inc(result.marked_due)
    if stats is not None:
        stats.batches += 1
        stats.accepted += result.accepted
        stats.unknown += result.unknown
        stats.inactive += result.inactive
        stats.malformed += result.malformed
        stats.marked_due += result.marked_due
