"""Settings from MAILWATCH_* environment variables, loaded once and passed down.

`Settings` holds what the whole process shares (database, keys, gRPC
address) and one section per component (`sync`, `renew`, `poll`, `prune`,
`ingest`, `stream`, `limits`, `http`, `push`, `tls`, `gmail`, `pubsub`, `log`); each
component is handed its section whole. A field's variable is
MAILWATCH_<SECTION>_<FIELD> unless the field names another (`env=`): the
variables predate the sections and users' deployments and the Helm chart
set them, so they never change. Each field carries its description, from
which docs/configuration.md and the chart's values.yaml comments are
generated (scripts/gen_config_docs.py). `ENV_SETTINGS` lists every variable
with its description, the one source the chart's checks and that generator read.

A bad value stops start-up with a one-line explanation (`ConfigError`),
checked in one place: `Settings.validated()`, which asks each section.
"""

from __future__ import annotations

import logging
import os
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import ClassVar, Mapping, NamedTuple

from mailwatch import database_url as urls

PREFIX = "MAILWATCH_"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message is one line for the operator."""


def setting(default, description: str, *, env: str = "", positive: bool = False):
    """A field with what it means for the operator (the configuration page and the
    chart's values.yaml comments are generated from it: scripts/gen_config_docs.py),
    its variable's name when section + field does not spell it, and whether it must be > 0."""
    return field(default=default, metadata={"description": description, "env": env, "positive": positive})


class _Section:
    """What every settings section shares: its variables' names and the checks of single values."""

    #: MAILWATCH_<prefix>_<FIELD>, the prefix being the section's name ("" for the top level).
    prefix: ClassVar[str] = ""

    @classmethod
    def env_name(cls, name: str) -> str:
        """The environment variable that sets field `name` of this section."""
        declared = next(f for f in fields(cls) if f.name == name).metadata.get("env")
        return declared or f"{PREFIX}{cls.prefix.upper()}{'_' if cls.prefix else ''}{name.upper()}"

    def validate(self) -> None:
        """Raise ConfigError for the first bad value; sections add their own rules after this."""
        for f in fields(self):
            if f.metadata.get("positive") and getattr(self, f.name) <= 0:
                raise ConfigError(f"{self.env_name(f.name)} must be positive")


def _listen_address(value: str, env: str) -> None:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{env} must be HOST:PORT, got {value!r}")


@dataclass(frozen=True)
class PubSubSettings(_Section):
    """The deployment's own Pub/Sub resources (tenants may configure their own)."""

    prefix: ClassVar[str] = "pubsub"
    topic: str = setting(
        "",
        "Topic `users.watch` asks Gmail to publish to (`projects/PROJECT/topics/TOPIC`), for credentials of its "
        "project; required unless every tenant has its own (`mailwatch tenants google-settings`).",
    )
    subscriptions: tuple[str, ...] = setting(
        (),
        "Pull subscription(s) ingest reads (`projects/PROJECT/subscriptions/NAME`), comma separated; "
        "empty with push delivery.",
    )


@dataclass(frozen=True)
class GmailSettings(_Section):
    """How the Gmail client reaches Google; tests and the dev stack point these at the simulator."""

    prefix: ClassVar[str] = "gmail"
    api_endpoint: str = setting(
        "https://gmail.googleapis.com/", "Gmail API endpoint; change it only to point at the Gmail simulator."
    )
    token_uri: str = setting(
        "https://oauth2.googleapis.com/token",
        "OAuth token endpoint; change it only to point at the Gmail simulator.",
        env="MAILWATCH_GOOGLE_TOKEN_URI",
    )
    calls_per_user: int = setting(
        5,
        "Gmail calls in flight at once for one Gmail user, per replica (sync, renewal, registration and batches "
        "together: each part of a batch counts, so it also caps a batch's size); more wait their turn. Gmail "
        "refuses a user's requests past about 10 in flight across all of that user's clients.",
        positive=True,
    )
    tenant_units_per_minute: int = setting(
        0,
        "Each tenant's budget of Gmail quota units a minute, all replicas together (0: none), so that one "
        "tenant's bulk registration, backfill or resync storm cannot take the quota of a Google project tenants "
        "share (Gmail allows 1,200,000 units a minute per project). A tenant past its budget waits (its calls are "
        "deferred, its due syncs and renewals left unclaimed) while other tenants' work goes on. A tenant's "
        "Google settings may set its own (`gmail_units_per_minute`).",
    )

    def validate(self) -> None:
        super().validate()
        if self.tenant_units_per_minute < 0:
            raise ConfigError(f"{self.env_name('tenant_units_per_minute')} must not be negative (0: no budget), "
                              f"got {self.tenant_units_per_minute}")


@dataclass(frozen=True)
class LogSettings(_Section):
    """Log lines (logs.py): structured, carrying tenant and request ids, never secrets."""

    prefix: ClassVar[str] = "log"
    format: str = setting("json", "Log format: `json` (for log pipelines) or `text`.")
    level: str = setting("INFO", "Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.")

    def validate(self) -> None:
        super().validate()
        if self.format not in ("json", "text"):
            raise ConfigError(f"{self.env_name('format')} must be json or text, got {self.format!r}")
        if self.level.upper() not in logging.getLevelNamesMapping():
            raise ConfigError(f"{self.env_name('level')} must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {self.level!r}")


# Workers (each can be switched off, e.g. to run API-only replicas).


@dataclass(frozen=True)
class SyncSettings(_Section):
    """The history sync worker (workers/sync.py)."""

    prefix: ClassVar[str] = "sync"
    enabled: bool = setting(True, "Run the history sync worker in this replica.")
    concurrency: int = setting(16, "Mailboxes synced at once per replica.", positive=True)
    lease_seconds: float = setting(
        60.0,
        "Seconds after which a crashed replica's mailboxes (and renewals) are taken over; a live worker extends "
        "its lease every third of it.",
        positive=True,
    )
    backfill_units_per_minute: int = setting(
        3000,
        "Gmail quota units a minute one mailbox's backfill (a registration's `backfill`) may spend, in this "
        "replica: Gmail allows each user 6,000 a minute (15,000 for projects created before May 2026) and locks "
        "out a user who goes past it, live syncs included, so a backfill takes half and leaves the rest. A "
        "backfill of 10,000 messages spends about 50,100 units (docs/api.md). At 6,000 or more the backfill alone "
        "can use up a user's minute and Gmail then refuses that mailbox's live sync too (429 "
        "userRateLimitExceeded): the sync worker warns at start-up; set it so only for projects with the older "
        "15,000.",
        positive=True,
    )


@dataclass(frozen=True)
class RenewSettings(_Section):
    """The watch renewal worker (workers/renew.py): re-watch every mailbox about once a day."""

    prefix: ClassVar[str] = "renew"
    enabled: bool = setting(
        True,
        "Run the renewal worker in this replica: `users.watch` again daily per mailbox, at a time of day spread by "
        "address; failures back off, and an expired watch emits `WATCH_EXPIRED` once.",
    )
    loop_seconds: float = setting(5.0, "How often a replica looks for due renewals, in seconds.", positive=True)
    watch_expiring_hours: float = setting(
        48.0,
        "`WATCH_EXPIRING` is sent (once per watch) when renewal keeps failing and the watch expires within this "
        "many hours.",
        env="MAILWATCH_WATCH_EXPIRING_HOURS",
        positive=True,
    )


@dataclass(frozen=True)
class PollSettings(_Section):
    """The fallback poll (workers/poll.py)."""

    prefix: ClassVar[str] = "poll"
    enabled: bool = setting(True, "Run the fallback poll in this replica (it covers notifications Gmail dropped).")
    interval_seconds: float = setting(
        300.0, "A mailbox quiet this many seconds is synced without a notification.", positive=True
    )


@dataclass(frozen=True)
class PruneSettings(_Section):
    """The change-log pruner (workers/prune.py)."""

    prefix: ClassVar[str] = "prune"
    enabled: bool = setting(True, "Run the retention pruner in this replica.")
    retention_hours: float = setting(
        7 * 24.0,
        "Change-log events are kept at least this many hours: the log has a partition per UTC day, dropped whole "
        "once its last moment is older than this (so events live up to a day longer); a consumer whose cursor is "
        "older gets `CURSOR_EXPIRED`. Malformed notifications kept for inspection expire with them (each source keeps at most "
        "its newest 1,000; drops are counted in `mailwatch_malformed_notifications_dropped_total`).",
        env="MAILWATCH_RETENTION_HOURS",
        positive=True,
    )


@dataclass(frozen=True)
class IngestSettings(_Section):
    """The Pub/Sub pull ingestor (ingest/pull.py)."""

    prefix: ClassVar[str] = "ingest"
    enabled: bool = setting(
        True, "Pull notifications from the Pub/Sub subscription(s) in this replica (batched pull, one ack per batch)."
    )
    batch_size: int = setting(1000, "Messages per Pub/Sub pull (at most 1000).", positive=True)
    concurrency: int = setting(
        4,
        "Pull loops per subscription in this replica, each with at most one batch in flight (one pulls while the "
        "others write and acknowledge).",
        positive=True,
    )
    pull_timeout: float = setting(
        5.0, "Seconds a pull waits for messages; shutdown waits for a pull in flight too.", positive=True
    )
    sources_refresh_seconds: float = setting(
        30.0,
        "How often, in seconds, ingest (and push) look for tenants' subscriptions added or removed in their "
        "Google settings; each subscription gets its own pull loop.",
        positive=True,
    )

    def validate(self) -> None:
        super().validate()
        if self.batch_size > 1000:  # Pub/Sub returns at most 1000 messages per pull
            raise ConfigError(f"{self.env_name('batch_size')} must be at most 1000, got {self.batch_size}")


@dataclass(frozen=True)
class StreamSettings(_Section):
    """Change streams (streams/changes.py)."""

    prefix: ClassVar[str] = "stream"
    poll_seconds: float = setting(
        5.0, "Streams re-read the change log this often, in seconds, even without a NOTIFY.", positive=True
    )


@dataclass(frozen=True)
class LimitSettings(_Section):
    """Per-tenant limits on this service's own resources (usage_limits.py), all replicas together."""

    prefix: ClassVar[str] = "limits"
    streams_per_tenant: int = setting(
        100,
        "`StreamChanges` streams one tenant may hold open at once, all replicas together (0: no limit); one more "
        "is refused with RESOURCE_EXHAUSTED, reason TENANT_STREAM_LIMIT. A tenant's own limit (AdminService."
        "SetTenantLimits) wins. Each open stream holds a lease in Postgres; a replica killed without closing its "
        "streams stops counting them after MAILWATCH_LIMITS_STREAM_LEASE_SECONDS.",
    )
    rpcs_per_second_per_key: int = setting(
        200,
        "Calls one API key may make a second, all replicas together, in bursts of up to as many at once (a token "
        "bucket in Postgres; 0: no limit); more are refused with RESOURCE_EXHAUSTED, reason RPC_RATE_LIMITED, and a "
        "RetryInfo saying when the key may call again. Opening a stream is one call. A tenant's own limit applies to "
        "each of its keys. Replicas take a key's calls from its bucket a tenth of a second's worth at a time, so "
        "with R replicas a key may go past this by up to R x (rate/10 rounded up, less 1) calls "
        "(docs/operations.md).",
    )
    registrations_per_minute_per_tenant: int = setting(
        6000,
        "Mailboxes one tenant may register a minute, all replicas together, in bursts of up to as many at once (a "
        "token bucket in Postgres; 0: no limit), each address of a `BatchRegisterMailboxes` counting as one; a "
        "call that would go past it is refused whole with RESOURCE_EXHAUSTED, reason REGISTRATION_RATE_LIMITED, and a RetryInfo (a "
        "batch larger than the limit: FAILED_PRECONDITION, REGISTRATION_BATCH_OVER_LIMIT). A tenant's own limit "
        "wins. A registration costs 101 Gmail quota units, so 6,000 a minute is about half of a Google project's "
        "1,200,000.",
    )

    stream_lease_seconds: float = setting(
        30.0,
        "How long an open stream's lease in Postgres lasts; its replica renews its streams' leases every third of "
        "this. The streams of a replica that died without closing them (SIGKILL, a lost node) stop counting against "
        "their tenant's stream limit this long after its last renewal at the latest.",
        positive=True,
    )

    def validate(self) -> None:
        super().validate()
        for name in ("streams_per_tenant", "rpcs_per_second_per_key", "registrations_per_minute_per_tenant"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{self.env_name(name)} must not be negative (0: no limit), got {getattr(self, name)}")


@dataclass(frozen=True)
class HttpSettings(_Section):
    """Plain HTTP for /metrics (Prometheus), /healthz and, with push, /pubsub/push (http.py)."""

    prefix: ClassVar[str] = "http"
    listen: str = setting(
        "", "HOST:PORT serving `/metrics` (Prometheus), `/healthz` and, with push, `/pubsub/push`; empty: not served."
    )

    def validate(self) -> None:
        super().validate()
        if self.listen:
            _listen_address(self.listen, self.env_name("listen"))


@dataclass(frozen=True)
class PushSettings(_Section):
    """Pub/Sub push delivery (ingest/push.py)."""

    prefix: ClassVar[str] = "push"
    enabled: bool = setting(False, "Accept Pub/Sub push deliveries on `/pubsub/push` (served on `MAILWATCH_HTTP_LISTEN`).")
    verify_token: bool = setting(
        True, "Verify the push subscription's OIDC token; turn off only on a private network."
    )
    audience: str = setting("", "Audience configured on the push subscription (usually the push URL).")
    service_account_email: str = setting("", "Service account the push subscription signs its tokens as.")
    accept_unwrapped: bool = setting(
        False,
        "Also accept deliveries of push subscriptions with payload unwrapping (`pushConfig.noWrapper`): the body "
        "is the Gmail notification itself, the message id in `x-goog-pubsub-message-id` (with write metadata). "
        "Enveloped deliveries are accepted either way.",
    )
    certs_url: str = setting(
        "https://www.googleapis.com/oauth2/v1/certs", "Where the token-signing certificates are fetched from."
    )
    issuers: tuple[str, ...] = setting(
        ("https://accounts.google.com", "accounts.google.com"),
        "Issuers (`iss`) whose push tokens are accepted, comma separated: Google's; the dev stack names the Gmail "
        "simulator's, verified by the same code.",
    )

    def validate(self) -> None:
        super().validate()
        if not (self.enabled and self.verify_token):
            return
        if not (self.audience and self.service_account_email):
            raise ConfigError(
                f"push needs {self.env_name('audience')} and {self.env_name('service_account_email')} "
                f"(or {self.env_name('verify_token')}=false on a private network)"
            )
        if not self.issuers:
            raise ConfigError(f"{self.env_name('issuers')} must name at least one token issuer")


@dataclass(frozen=True)
class TlsSettings(_Section):
    """TLS on the gRPC port (tls.py): a PEM certificate chain and its key (both, or
    neither for plaintext); with a client CA, clients must present a certificate
    it signed (mutual TLS). Files are re-read when they change."""

    prefix: ClassVar[str] = "tls"
    cert_file: str = setting(
        "",
        "PEM certificate chain: the gRPC port serves TLS (with `MAILWATCH_TLS_KEY_FILE`); re-read when it changes "
        "(cert-manager rotation), no restart. Empty: plaintext.",
    )
    key_file: str = setting("", "PEM private key of `MAILWATCH_TLS_CERT_FILE`.")
    client_ca_file: str = setting(
        "", "PEM CA: clients must present a certificate it signed (mutual TLS). Empty: no client certificates."
    )

    def validate(self) -> None:
        super().validate()
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError(f"{self.env_name('cert_file')} and {self.env_name('key_file')} go together")
        if self.client_ca_file and not self.cert_file:
            raise ConfigError(
                f"{self.env_name('client_ca_file')} (mutual TLS) needs "
                f"{self.env_name('cert_file')} and {self.env_name('key_file')}"
            )


#: What MAILWATCH_EVENT_LOOP may name, the default first (mailwatch.event_loop makes them).
EVENT_LOOPS = ("uvloop", "asyncio")


def _section(kind: type):
    return field(default_factory=kind, metadata={"section": True})


@dataclass(frozen=True)
class Settings(_Section):
    """What the whole process shares: the database, the keys, the gRPC address and the drain."""

    database_url: str = setting("", "The database, a `postgresql://` URL (required).")
    secret_keys: tuple[str, ...] = setting(
        (),
        "Fernet keys, comma separated (required): the first encrypts, all decrypt, so keys can be rotated: put a new "
        "key first, run `mailwatch rotate-secrets` to re-encrypt every stored credential under it, then drop the old "
        "one. Make one with `mailwatch secret-key`; losing them loses every stored Google credential.",
    )
    operator_token: str = setting("", "Bearer token guarding the admin RPCs (`AdminService`); empty disables them.")
    listen: str = setting("127.0.0.1:50051", "The gRPC address, HOST:PORT (`mailwatch serve --listen`).")
    role: str = setting(
        "all",
        "What this replica runs besides the gRPC API, health and metrics (`mailwatch serve --role`): `all` every "
        "worker; `api` none; `ingest` the Pub/Sub pull only; `sync` the sync, renewal, fallback poll and pruning. "
        "A worker runs when its role includes it and its own `*_ENABLED` is true.",
    )
    grace_seconds: float = setting(10.0, "Seconds calls in flight may take to finish after SIGTERM (the drain).")
    event_loop: str = setting(
        EVENT_LOOPS[0],
        "The event loop `mailwatch serve` runs on: `uvloop` (libuv, in C: less CPU for the loop's share of each "
        "stream message, database round trip and wake-up) or `asyncio` (the standard library's loop: where uvloop "
        "has no build, e.g. Windows, or for asyncio's debug mode).",
    )
    pubsub: PubSubSettings = _section(PubSubSettings)
    gmail: GmailSettings = _section(GmailSettings)
    log: LogSettings = _section(LogSettings)
    sync: SyncSettings = _section(SyncSettings)
    renew: RenewSettings = _section(RenewSettings)
    poll: PollSettings = _section(PollSettings)
    prune: PruneSettings = _section(PruneSettings)
    ingest: IngestSettings = _section(IngestSettings)
    stream: StreamSettings = _section(StreamSettings)
    limits: LimitSettings = _section(LimitSettings)
    http: HttpSettings = _section(HttpSettings)
    push: PushSettings = _section(PushSettings)
    tls: TlsSettings = _section(TlsSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Read the MAILWATCH_* variables of `environ` (default: the process's);
        keyword overrides (CLI flags, tests) win and are named like the variable
        without its prefix (`listen=`, `sync_lease_seconds=`); None means unset."""
        environ = os.environ if environ is None else environ
        unknown = set(overrides) - {entry.key for entry in ENV_SETTINGS}
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        values: dict[str, dict] = {}
        for entry in ENV_SETTINGS:
            if overrides.get(entry.key) is not None:
                value = overrides[entry.key]
            elif entry.env in environ:
                value = _parse(entry.env, entry.type, environ[entry.env])
            else:
                continue
            values.setdefault(entry.section, {})[entry.field] = value
        top = values.pop("", {})
        sections = {name: SECTIONS[name](**given) for name, given in values.items()}
        return cls(**top, **sections).validated()

    def validated(self) -> "Settings":
        """Every check, in one place: the top level's, each section's, and those across sections."""
        self.validate()
        if self.push.enabled and not self.http.listen:
            raise ConfigError(
                f"{self.push.env_name('enabled')} needs {self.http.env_name('listen')} (where Pub/Sub pushes to)"
            )
        for name in SECTIONS:
            getattr(self, name).validate()
        return self.for_role()

    def for_role(self) -> "Settings":
        """These settings with every worker section outside the role switched off."""
        off = {name: replace(getattr(self, name), enabled=False) for name in WORKER_SECTIONS
               if name not in ROLES[self.role]}
        return replace(self, **off) if off else self

    def validate(self) -> None:
        if not self.database_url:
            raise ConfigError(f"{PREFIX}DATABASE_URL is required (e.g. postgresql://user@host/db)")
        try:
            urls.check(self.database_url)
        except ValueError:
            raise ConfigError(
                f"{PREFIX}DATABASE_URL must be a postgresql:// URL, got {self.database_url.split(':')[0]}://…"
            ) from None
        _listen_address(self.listen, self.env_name("listen"))
        if self.role not in ROLES:
            raise ConfigError(f"{self.env_name('role')} must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.grace_seconds < 0:
            raise ConfigError(f"{self.env_name('grace_seconds')} must not be negative")
        if self.event_loop not in EVENT_LOOPS:
            raise ConfigError(f"{self.env_name('event_loop')} must be {' or '.join(EVENT_LOOPS)}, got {self.event_loop!r}")

    def environment(self) -> dict[str, str]:
        """These settings as MAILWATCH_* variables (what `from_env` reads back), e.g. for a child process."""
        env = {}
        for entry in ENV_SETTINGS:
            value = getattr(getattr(self, entry.section) if entry.section else self, entry.field)
            if isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[entry.env] = str(value)
        return env

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the psycopg 3 driver named, as SQLAlchemy wants it."""
        return urls.sqlalchemy_url(self.database_url)


#: The worker sections a replica of each role runs (`MAILWATCH_ROLE`); the API runs in every role.
WORKER_SECTIONS = ("sync", "renew", "poll", "prune", "ingest")
ROLES: dict[str, frozenset[str]] = {
    "all": frozenset(WORKER_SECTIONS),
    "api": frozenset(),
    "ingest": frozenset({"ingest"}),
    "sync": frozenset({"sync", "renew", "poll", "prune"}),
}

SECTIONS: dict[str, type[_Section]] = {
    f.name: f.default_factory for f in fields(Settings) if f.metadata.get("section")  # type: ignore[misc]
}


class EnvSetting(NamedTuple):
    env: str  # MAILWATCH_SYNC_LEASE_SECONDS
    key: str  # sync_lease_seconds: the variable without its prefix, the name of a `from_env` override
    section: str  # "sync" ("" for the top level)
    field: str  # lease_seconds
    type: str  # the field's annotation, which says how the variable is parsed
    default: object
    description: str  # what it means, for the operator


def _env_settings() -> tuple[EnvSetting, ...]:
    found = []
    for section, kind in (("", Settings), *SECTIONS.items()):
        for f in fields(kind):
            if f.metadata.get("section"):
                continue
            env = kind.env_name(f.name)
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            key = env.removeprefix(PREFIX).lower()
            found.append(EnvSetting(env, key, section, f.name, str(f.type), default, f.metadata["description"]))
    return tuple(found)


#: Every variable the service reads, in the order the sections are declared.
ENV_SETTINGS = _env_settings()


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _parse(env: str, kind: str, raw: str):
    try:
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if kind == "bool":
            if raw.strip().lower() not in _BOOLEANS:
                raise ValueError
            return _BOOLEANS[raw.strip().lower()]
        if kind == "float":
            return float(raw)
        if kind == "int":
            return int(raw)
    except ValueError:
        expected = "true or false" if kind == "bool" else "a number"
        raise ConfigError(f"{env} must be {expected}, got {raw!r}") from None
    return raw
