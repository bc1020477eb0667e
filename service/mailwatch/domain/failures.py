"""What a worker does with a failed Gmail job: one decision for sync and renew alike (pure).

Retry semantics live on the domain error (`retryable`, `retry_at` /
`retry_after`); this module turns an exception into a `Failure`: the stable
reason and message to record, whether the mailbox goes to a terminal state
(and which lifecycle event says so), and the earliest moment Gmail allows the
next call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from mailwatch.domain import errors
from mailwatch.domain.models import EventType, MailboxState

# Final failures: the state the mailbox goes to and the event that says so.
TERMINAL: dict[type[errors.MailwatchError], tuple[MailboxState, EventType]] = {
    errors.GmailAuthFailed: (MailboxState.AUTH_FAILED, EventType.AUTH_FAILED),
    errors.GmailAccessRefused: (MailboxState.ACCESS_REFUSED, EventType.ACCESS_REFUSED),
    # Gmail will not watch as asked (the topic, the label filter): renewing again changes nothing.
    errors.GmailTopicNotPublishable: (MailboxState.ACCESS_REFUSED, EventType.ACCESS_REFUSED),
    errors.GmailLabelRejected: (MailboxState.ACCESS_REFUSED, EventType.ACCESS_REFUSED),
}


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    terminal: tuple[MailboxState, EventType] | None  # None: back off and try again
    gmail_retry_at: datetime | None  # no Gmail call before this (Gmail's own retry time)
    detail: dict[str, str] = field(default_factory=dict)  # for the lifecycle event

    @property
    def outcome(self) -> str:
        """A bounded label for metrics."""
        if self.terminal is not None:
            return self.terminal[0].value.lower()
        if self.reason == errors.GmailRateLimited.reason:
            return "rate_limited"
        return "error" if self.reason == "INTERNAL" else "retry"

    def retry_at(self, backoff_at: datetime) -> datetime:
        """The next attempt: the backoff's choice, never before Gmail's retry time."""
        if self.gmail_retry_at is not None and self.gmail_retry_at > backoff_at:
            return self.gmail_retry_at
        return backoff_at


def failure_of(exc: BaseException, now: datetime, *, doing: str) -> Failure:
    """The decision for `exc`, raised while `doing` (e.g. "sync")."""
    if not isinstance(exc, errors.MailwatchError):
        return Failure("INTERNAL", f"unexpected {type(exc).__name__} during {doing}", None, None)
    terminal = None
    if not exc.retryable:
        terminal = next((t for cls, t in TERMINAL.items() if isinstance(exc, cls)), None)
    detail = {"reason": exc.reason, "message": exc.message}
    # What Google said, for the lifecycle event: the API's reason, the token endpoint's error.
    for key in ("gmail_reason", "oauth_error"):
        if exc.metadata.get(key):
            detail[key] = str(exc.metadata[key])
    return Failure(exc.reason, exc.message, terminal, exc.not_before(now), detail)
