"""Domain exceptions. Each has a stable `reason` (UPPER_SNAKE) that the API
layer maps to a gRPC code in one table (`mailwatch.api.errors`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


class MailwatchError(Exception):
    """A failure with a stable `reason`, and what to do about it.

    `retryable`: whether trying the same work again later can succeed (a
    worker backs off and retries) or not (a terminal state until the tenant
    acts). `retry_after` (seconds) and `retry_at` (an instant) are the
    earliest retry time the other side named, if it named one.
    """

    reason = "MAILWATCH_ERROR"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        metadata: dict[str, str] | None = None,
        retry_after: float | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata or {}
        self.retry_after = retry_after
        self.retry_at = retry_at

    def not_before(self, now: datetime) -> datetime | None:
        """The earliest moment a retry may happen, as the other side said; None if it did not say."""
        candidates = [t for t in (self.retry_at,) if t is not None]
        if self.retry_after is not None:
            candidates.append(now + timedelta(seconds=self.retry_after))
        return max(candidates) if candidates else None


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class InvalidArgument(MailwatchError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], message: str | None = None) -> None:
        super().__init__(message or "; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations


class Unauthenticated(MailwatchError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(MailwatchError):
    reason = "PERMISSION_DENIED"


class AdminDisabled(PermissionDenied):
    """The server has no operator token, so the admin RPCs are switched off."""

    reason = "ADMIN_DISABLED"


class NotFound(MailwatchError):
    reason = "NOT_FOUND"


class AlreadyExists(MailwatchError):
    reason = "ALREADY_EXISTS"


class LimitExceeded(MailwatchError):
    """A tenant went past one of its limits on this service's own resources (usage_limits.py);
    `retry_after` says when trying again can succeed."""

    reason = "LIMIT_EXCEEDED"
    retryable = True


class TenantStreamLimit(LimitExceeded):
    """The tenant already holds as many open change streams as it may."""

    reason = "TENANT_STREAM_LIMIT"


class RpcRateLimited(LimitExceeded):
    """The API key made as many calls as it may in the last second."""

    reason = "RPC_RATE_LIMITED"


class RegistrationRateLimited(LimitExceeded):
    """The tenant registered as many mailboxes as it may in the last minute."""

    reason = "REGISTRATION_RATE_LIMITED"


class RegistrationBatchOverLimit(MailwatchError):
    """A batch holds more addresses than the tenant may register in a minute: no wait lets it
    through, so it is not retryable; smaller batches are."""

    reason = "REGISTRATION_BATCH_OVER_LIMIT"


class ConcurrentUpdate(MailwatchError):
    """The call's transaction lost a race with another writer (Postgres rolled it back to
    break a deadlock); nothing of it was written, and the same call again is expected to
    succeed, so it carries a retry hint."""

    reason = "CONCURRENT_UPDATE"
    retryable = True

    def __init__(self, message: str = "the call collided with a concurrent update; retry it", *,
                 retry_after: float = 0.2, **kw) -> None:
        super().__init__(message, retry_after=retry_after, **kw)


class CursorExpired(MailwatchError):
    """The cursor points before the oldest retained change; the client must resync.

    `pruned_through_sequence` is the tenant's retention watermark: resuming
    right after it reads everything still retained (the API hands it out as
    the `earliest_cursor` of the error).
    """

    reason = "CURSOR_EXPIRED"

    def __init__(
        self, message: str, *, pruned_through_sequence: int | None = None, metadata: dict[str, str] | None = None
    ) -> None:
        metadata = dict(metadata or {})
        if pruned_through_sequence is not None:
            metadata["pruned_through_sequence"] = str(pruned_through_sequence)
        super().__init__(message, metadata=metadata)
        self.pruned_through_sequence = pruned_through_sequence


class InvalidCursor(MailwatchError):
    reason = "INVALID_CURSOR"


class DatabaseUnavailable(MailwatchError):
    """Postgres cannot be reached right now (restart, failover, connection lost).

    Nothing the caller did; the same call is expected to work once the
    database is back, so it carries a retry hint.
    """

    reason = "DATABASE_UNAVAILABLE"
    retryable = True

    def __init__(self, message: str = "the database is temporarily unavailable", *, retry_after: float = 1.0,
                 **kw) -> None:
        super().__init__(message, retry_after=retry_after, **kw)


class NotMigrated(MailwatchError):
    """The database schema is not at the head revision; run `mailwatch migrate`."""

    reason = "NOT_MIGRATED"


class NoDefaultCredentials(MailwatchError):
    """A registration without credentials, but the tenant has no default Google credentials."""

    reason = "NO_DEFAULT_CREDENTIALS"


class MailboxStopped(MailwatchError):
    """The mailbox is STOPPED: it keeps no credentials, so Gmail cannot be asked for it
    until it is registered again."""

    reason = "MAILBOX_STOPPED"


# --- secrets at rest ----------------------------------------------------------


class SecretsNotConfigured(MailwatchError):
    """No (or no usable) encryption key is configured for credentials at rest."""

    reason = "SECRETS_NOT_CONFIGURED"


class CredentialUndecryptable(MailwatchError):
    """A stored credential cannot be decrypted with any configured key, or is corrupt."""

    reason = "CREDENTIAL_UNDECRYPTABLE"


# --- Gmail failures, as the gmail/ adapter classifies them -------------------


class GmailError(MailwatchError):
    # Unless a subclass knows better, a Gmail failure may pass: back off and retry.
    reason = "GMAIL_ERROR"
    retryable = True


class GmailAuthFailed(GmailError):
    """The grant is gone: revoked or expired, the user deleted, delegation not granted
    (unauthorized_client), or the API still answering 401 to a fresh token."""

    reason = "GMAIL_AUTH_FAILED"
    retryable = False


class GmailPermissionDenied(GmailError):
    """A 403 that is neither a rate limit nor a known permanent refusal."""

    reason = "GMAIL_PERMISSION_DENIED"


class GmailAddressMismatch(GmailPermissionDenied):
    """The credentials act for another mailbox than the registered address: Gmail's user
    (getProfile) is neither that address nor has it among its send-as aliases."""

    reason = "GMAIL_ADDRESS_MISMATCH"
    retryable = False


class GmailAccessRefused(GmailPermissionDenied):
    """Gmail refuses this user for good until someone changes the Google side: delegation
    denied, domainPolicy, insufficientPermissions, "Mail service not enabled".
    `metadata["gmail_reason"]` says which."""

    reason = "GMAIL_ACCESS_REFUSED"
    retryable = False


class GmailTopicNotPublishable(GmailError):
    """users.watch refused: the topic is malformed, missing, or Gmail may not publish to it
    (no publisher role for gmail-api-push@system.gserviceaccount.com). Final until the
    topic is fixed and the mailbox registered again."""

    reason = "GMAIL_TOPIC_NOT_PUBLISHABLE"
    retryable = False


class TopicProjectMismatch(GmailTopicNotPublishable):
    """The watch topic is not in the Google project of the credentials calling Gmail."""

    reason = "TOPIC_PROJECT_MISMATCH"

    @classmethod
    def between(cls, *, topic: str, credentials_project: str) -> "TopicProjectMismatch":
        topic_project = topic.split("/")[1] if topic.startswith("projects/") else ""
        return cls(
            f"the Pub/Sub topic {topic} is in Google project '{topic_project}' but the credentials act for "
            f"project '{credentials_project}'; Gmail only publishes to a topic in the credentials' own project "
            f"(use a topic in '{credentials_project}', or credentials from '{topic_project}')",
            metadata={"topic": topic, "topic_project": topic_project, "credentials_project": credentials_project},
        )


class GmailRateLimited(GmailError):
    """429 / 403 rate limits; `retry_at` / `retry_after` carry Gmail's retry time when it gave one."""

    reason = "GMAIL_RATE_LIMITED"


class GmailUnavailable(GmailError):
    """5xx or a transport failure: worth retrying later."""

    reason = "GMAIL_UNAVAILABLE"


class GmailClockSkew(GmailUnavailable):
    """The token endpoint refused our JWT's iat/exp: this host's clock is off. Not a
    revoked grant: it passes once the clock is right, so it is retried."""

    reason = "GMAIL_CLOCK_SKEW"


class GmailHistoryExpired(GmailError):
    """history.list answered 404: startHistoryId is older than retained history."""

    reason = "GMAIL_HISTORY_EXPIRED"


class GmailBadRequest(GmailError):
    reason = "GMAIL_BAD_REQUEST"


class GmailLabelRejected(GmailBadRequest):
    """users.watch refused the label filter: a label id the mailbox does not have (or no
    longer has). Final until registered again with another filter. messages.list refuses
    its label ids the same way (ListMessages: INVALID_ARGUMENT on label_ids)."""

    reason = "GMAIL_LABEL_REJECTED"
    retryable = False


class GmailQueryRejected(GmailBadRequest):
    """messages.list refused its search query `q` (ListMessages: INVALID_ARGUMENT on query)."""

    reason = "GMAIL_QUERY_REJECTED"
    retryable = False


class GmailPushClientConflict(GmailBadRequest):
    """users.watch refused: the project already has a live watch on the user with
    another topic ("Only one user push notification client allowed per developer")."""

    reason = "GMAIL_PUSH_CLIENT_CONFLICT"


class GmailMailboxNotFound(GmailError):
    reason = "GMAIL_MAILBOX_NOT_FOUND"


class GmailAttachmentNotFound(GmailError):
    """messages.attachments.get refused the attachment id (Gmail: 400 "Invalid attachment token"):
    not one of the message's attachments."""

    reason = "ATTACHMENT_NOT_FOUND"
    retryable = False


class GmailMessageNotFound(GmailError):
    """messages.get answered 404: the message is gone (deleted) or never existed."""

    reason = "MESSAGE_NOT_FOUND"
