"""The domain's records, as the store returns them and the API renders them."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime


class MailboxState(enum.StrEnum):
    ACTIVE = "ACTIVE"  # watched (or being re-watched) and synced
    AUTH_FAILED = "AUTH_FAILED"  # credentials revoked; no Gmail calls until re-registered
    STOPPED = "STOPPED"  # users.stop called; notifications ignored
    # Gmail refused access for good (delegation denied, domain policy, insufficient
    # permissions, mail service not enabled, a watch refused for its topic or label
    # filter); no Gmail calls until re-registered.
    ACCESS_REFUSED = "ACCESS_REFUSED"


class LabelFilterBehavior(enum.StrEnum):
    INCLUDE = "INCLUDE"
    EXCLUDE = "EXCLUDE"


class CredentialKind(enum.StrEnum):
    SERVICE_ACCOUNT = "SERVICE_ACCOUNT"  # domain-wide delegation, subject = mailbox address
    OAUTH = "OAUTH"  # per-user refresh token


class EventType(enum.StrEnum):
    MESSAGE_ADDED = "MESSAGE_ADDED"
    MESSAGE_DELETED = "MESSAGE_DELETED"
    LABELS_ADDED = "LABELS_ADDED"
    LABELS_REMOVED = "LABELS_REMOVED"
    WATCH_STARTED = "WATCH_STARTED"
    WATCH_RENEWED = "WATCH_RENEWED"
    WATCH_EXPIRED = "WATCH_EXPIRED"
    RESYNC_REQUIRED = "RESYNC_REQUIRED"
    RESYNCED = "RESYNCED"
    AUTH_FAILED = "AUTH_FAILED"
    MAILBOX_STOPPED = "MAILBOX_STOPPED"
    WATCH_EXPIRING = "WATCH_EXPIRING"  # renewal failing and expiry near (once per episode)
    NOTIFICATIONS_MISSED = "NOTIFICATIONS_MISSED"  # a fallback poll found unannounced changes (once per episode)
    TEST = "TEST"  # from SendTestEvent
    ACCESS_REFUSED = "ACCESS_REFUSED"  # Gmail refused access for good; the mailbox is ACCESS_REFUSED
    HISTORY_SKIPPED = "HISTORY_SKIPPED"  # a history record kept failing (poison history) and was skipped
    MESSAGE_EXISTING = "MESSAGE_EXISTING"  # a message the mailbox held when a backfill was requested
    BACKFILL_COMPLETED = "BACKFILL_COMPLETED"  # a backfill delivered or skipped every listed message


# The headers fetched for MESSAGE_ADDED metadata when a registration enables
# metadata without naming any.
DEFAULT_METADATA_HEADERS = ("From", "To", "Cc", "Subject", "Date", "Message-ID")


@dataclass(frozen=True)
class Tenant:
    id: uuid.UUID
    name: str
    created: datetime
    # Change events at or below this sequence have been pruned; cursors that
    # point at or below it have expired.
    pruned_through_sequence: int = 0


@dataclass(frozen=True)
class ApiKey:
    id: uuid.UUID
    tenant_id: uuid.UUID
    prefix: str  # first characters of the key, shown to operators to tell keys apart
    created: datetime
    revoked_at: datetime | None = None


# Secret fields are excluded from repr so a credential that ends up in a log
# line, a traceback or an assertion message never prints key material.


@dataclass(frozen=True)
class ServiceAccountCredential:
    """A service account JSON key with domain-wide delegation."""

    info: dict = field(repr=False)  # the parsed JSON key file (holds the private key)
    subject: str  # the address to impersonate


@dataclass(frozen=True)
class OAuthCredential:
    client_id: str
    client_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)


Credential = ServiceAccountCredential | OAuthCredential


@dataclass(frozen=True)
class SealedCredential:
    """A mailbox's credential as stored: the tenant's shared sealed row (a
    service-account key or an OAuth client) and what is the mailbox's own."""

    sealed_credential_id: uuid.UUID  # the shared row: many mailboxes, one tenant
    kind: "CredentialKind"
    digest: bytes  # SHA-256 of the shared plaintext: a new key is a new digest
    ciphertext: bytes = field(repr=False)
    subject: str = ""  # a service account's impersonated address
    refresh_token_ciphertext: bytes | None = field(default=None, repr=False)  # OAuth: the mailbox's own


@dataclass(frozen=True)
class TenantDefaultCredential:
    """A registration that uses its tenant's default credentials: the tenant's service
    account impersonating the address, or (with a refresh token) its OAuth client."""

    refresh_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TenantLimits:
    """A tenant's own limits on mailwatch's resources (usage_limits.py); None: the deployment's, 0: no limit."""

    streams: int | None = None  # StreamChanges open at once, all replicas together
    rpcs_per_second: int | None = None  # calls of each of its API keys, all replicas together
    registrations_per_minute: int | None = None  # mailboxes registered a minute, all replicas together


@dataclass(frozen=True)
class GoogleSettings:
    """A tenant's Google setup: default credentials and the Pub/Sub topic in their project.

    `credential` (None when not decrypted, e.g. for display) is a
    ServiceAccountCredential with an empty subject, or an OAuthCredential with
    an empty refresh token (each mailbox brings its own).
    """

    tenant_id: uuid.UUID
    project_id: str
    credential_kind: CredentialKind
    credential_id: str  # the service account's e-mail or the OAuth client id (not secret)
    pubsub_topic: str
    pubsub_subscription: str | None = None  # None: push delivery
    push_audience: str | None = None
    updated: datetime | None = None
    credential: Credential | None = field(default=None, repr=False)
    gmail_units_per_minute: int | None = None  # the tenant's own Gmail quota budget; None: the deployment's

    def mailbox_credential(self, email_address: str, refresh_token: str | None) -> Credential:
        """The credential of a mailbox registered with the tenant's defaults."""
        if isinstance(self.credential, ServiceAccountCredential):
            return ServiceAccountCredential(info=self.credential.info, subject=email_address)
        if isinstance(self.credential, OAuthCredential):
            return OAuthCredential(self.credential.client_id, self.credential.client_secret, refresh_token or "")
        raise ValueError("the settings' credential was not decrypted")


@dataclass(frozen=True)
class SubscriptionStatus:
    """How pulling one Pub/Sub subscription goes (shared by every replica)."""

    subscription: str
    ok: bool | None  # None: never pulled yet
    consecutive_failures: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_success_at: datetime | None = None


@dataclass(frozen=True)
class LabelFilter:
    label_ids: tuple[str, ...] = ()
    behavior: LabelFilterBehavior = LabelFilterBehavior.INCLUDE

    def admits(self, message_label_ids: "list[str] | tuple[str, ...]") -> bool:
        """Whether a message with these labels is in the watched set."""
        if not self.label_ids:
            return True
        overlap = bool(set(self.label_ids) & set(message_label_ids))
        return overlap if self.behavior is LabelFilterBehavior.INCLUDE else not overlap


@dataclass(frozen=True)
class MessageLabels:
    """A Gmail message's labels as `messages.get(format=minimal)` saw them."""

    label_ids: tuple[str, ...]
    history_id: int  # the last history record that changed the message
    # Fetched in the same call for a mailbox with metadata on (no second messages.get).
    metadata: "MessageMetadata | None" = None


@dataclass(frozen=True)
class Mailbox:
    id: uuid.UUID
    tenant_id: uuid.UUID
    email_address: str
    state: MailboxState
    label_filter: LabelFilter
    credential_kind: CredentialKind
    history_id: int | None  # last history id whose changes are in the change log
    notified_history_id: int | None  # highest history id announced by a notification
    watch_expiration: datetime | None
    next_renewal_at: datetime | None
    last_notification_at: datetime | None
    last_sync_at: datetime | None
    last_error: str | None  # the message of the last failure
    last_error_at: datetime | None
    created: datetime
    updated: datetime
    last_error_reason: str | None = None  # its stable UPPER_SNAKE reason
    next_attempt_at: datetime | None = None  # when the failed work is tried again
    # Work scheduling, as the workers see it (defaults keep older callers valid).
    sync_due_at: datetime | None = None  # None = no sync wanted
    backoff_until: datetime | None = None
    sync_attempts: int = 0
    # Failed or lost attempts at the page starting at history_id (as the sync claim counted them).
    page_failures: int = 0
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    # Header names fetched as metadata for MESSAGE_ADDED events; None = metadata off.
    metadata_headers: tuple[str, ...] | None = None
    # Whether changes to drafts reach the change log (False: left out, sync/history_events).
    include_drafts: bool = False
    # NOTIFICATIONS_MISSED was sent and no notification has arrived since.
    notifications_missed_reported: bool = False
    watch_topic: str | None = None  # the topic of its Gmail watch; None: the deployment's
    # The address Gmail's notifications name (getProfile at registration); differs
    # from email_address when the mailbox was registered under an alias.
    gmail_address: str | None = None


@dataclass(frozen=True)
class ChangeEvent:
    """One row of a tenant's change log; `sequence` orders it within the tenant."""

    id: uuid.UUID
    sequence: int
    tenant_id: uuid.UUID
    mailbox_id: uuid.UUID | None  # None only for a tenant-wide TEST event
    email_address: str | None
    type: EventType
    observed_at: datetime
    history_id: int | None = None
    message_id: str | None = None
    thread_id: str | None = None
    label_ids: tuple[str, ...] = ()
    detail: dict = field(default_factory=dict)  # lifecycle details, e.g. the error or new baseline
    metadata: "MessageMetadata | None" = None  # MESSAGE_ADDED of a mailbox with metadata on


@dataclass(frozen=True)
class NewEvent:
    """A change to append to a tenant's log; the store assigns id and sequence."""

    mailbox_id: uuid.UUID | None
    email_address: str | None
    type: EventType
    history_id: int | None = None
    message_id: str | None = None
    thread_id: str | None = None
    label_ids: tuple[str, ...] = ()
    detail: dict = field(default_factory=dict)
    observed_at: datetime | None = None  # None = the database's now()
    metadata: "MessageMetadata | None" = None


@dataclass(frozen=True)
class MessageMetadata:
    """What a MESSAGE_ADDED event of a metadata-enabled mailbox carries."""

    headers: tuple[tuple[str, str], ...] = ()  # (name, value) in the message's order
    snippet: str = ""
    size_estimate: int = 0
    internal_date_ms: int | None = None
    missing: bool = False  # Gmail no longer had the message when it was fetched

    def to_json(self) -> dict:
        return {
            "headers": [list(pair) for pair in self.headers], "snippet": self.snippet,
            "sizeEstimate": self.size_estimate, "internalDate": self.internal_date_ms, "missing": self.missing,
        }

    @classmethod
    def from_json(cls, data: dict) -> "MessageMetadata":
        return cls(
            headers=tuple((str(name), str(value)) for name, value in data.get("headers", ())),
            snippet=data.get("snippet", ""), size_estimate=int(data.get("sizeEstimate") or 0),
            internal_date_ms=data.get("internalDate"), missing=bool(data.get("missing", False)),
        )
