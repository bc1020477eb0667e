"""Settings from MAILWATCH_* environment variables, loaded once and passed down.

A bad value stops start-up with a one-line explanation (`ConfigError`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Mapping

from mailwatch import database_url as urls


class ConfigError(ValueError):
    """A setting is missing or malformed; the message is one line for the operator."""


@dataclass(frozen=True)
class Settings:
    database_url: str = ""
    # Fernet keys (urlsafe base64, 32 bytes), comma separated: the first encrypts,
    # all decrypt, so keys can be rotated.
    secret_keys: tuple[str, ...] = ()
    operator_token: str = ""  # guards the admin RPCs; empty disables them
    listen: str = "127.0.0.1:50051"
    grace_seconds: float = 10.0
    # Google endpoints; tests and the dev stack point these at the simulator.
    gmail_api_endpoint: str = "https://gmail.googleapis.com/"
    google_token_uri: str = "https://oauth2.googleapis.com/token"
    # The Pub/Sub topic Gmail publishes to (users.watch topicName) and the
    # subscription(s) ingest pulls from.
    pubsub_topic: str = ""
    pubsub_subscriptions: tuple[str, ...] = ()
    log_format: str = "json"  # json | text
    log_level: str = "INFO"
    # Workers (each can be switched off, e.g. to run API-only replicas).
    sync_enabled: bool = True
    sync_concurrency: int = 16  # mailboxes synced at once per replica
    # Gmail calls in flight at once for one Gmail user, per replica (sync, renewal,
    # registration and batches together); Gmail refuses a user's requests past
    # about 10 in flight across all of that user's clients.
    gmail_calls_per_user: int = 5
    sync_lease_seconds: float = 60.0  # a crashed replica's mailboxes are taken over after this
    renew_enabled: bool = True  # re-watch every mailbox about once a day (lifecycle.schedule)
    renew_loop_seconds: float = 5.0  # how often a replica looks for due renewals
    # WATCH_EXPIRING is sent when renewal keeps failing and the watch expires within this many hours.
    watch_expiring_hours: float = 48.0
    poll_enabled: bool = True
    poll_interval_seconds: float = 300.0  # a mailbox quiet this long is synced without a notification
    ingest_enabled: bool = True
    ingest_batch_size: int = 1000  # messages per Pub/Sub pull
    ingest_pull_timeout: float = 5.0  # a pull waits this long for messages; shutdown waits for it too
    # How often ingest looks for tenants' subscriptions added or removed (Google settings).
    ingest_sources_refresh_seconds: float = 30.0
    retention_hours: float = 7 * 24.0  # change-log rows older than this are pruned
    prune_enabled: bool = True
    stream_poll_seconds: float = 5.0  # streams re-read even without a NOTIFY
    # Plain HTTP endpoint for /metrics (Prometheus), /healthz and, when push is
    # enabled, the Pub/Sub push endpoint /pubsub/push. Empty: not served.
    http_listen: str = ""
    push_enabled: bool = False
    push_verify_token: bool = True  # verify the push subscription's OIDC token
    push_audience: str = ""
    push_service_account_email: str = ""
    push_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    # Who may sign push tokens (`iss`): Google; the dev stack names the Gmail
    # simulator's own issuer, verified by the same code.
    push_issuers: tuple[str, ...] = ("https://accounts.google.com", "accounts.google.com")
    # TLS on the gRPC port: a PEM certificate chain and its key (both, or
    # neither for plaintext); with a client CA, clients must present a
    # certificate it signed (mutual TLS). Files are re-read when they change.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Read MAILWATCH_<FIELD> variables; keyword overrides (e.g. CLI flags) win."""
        environ = os.environ if environ is None else environ
        values: dict = {}
        for f in fields(cls):
            raw = environ.get(f"MAILWATCH_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _parse(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values).validated()

    def validated(self) -> "Settings":
        if not self.database_url:
            raise ConfigError("MAILWATCH_DATABASE_URL is required (e.g. postgresql://user@host/db)")
        try:
            urls.check(self.database_url)
        except ValueError:
            raise ConfigError(f"MAILWATCH_DATABASE_URL must be a postgresql:// URL, got {self.database_url.split(':')[0]}://…") from None
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"MAILWATCH_LISTEN must be HOST:PORT, got {self.listen!r}")
        if self.grace_seconds < 0:
            raise ConfigError("MAILWATCH_GRACE_SECONDS must not be negative")
        for name in ("sync_concurrency", "gmail_calls_per_user", "sync_lease_seconds", "renew_loop_seconds", "watch_expiring_hours", "poll_interval_seconds", "ingest_batch_size", "ingest_pull_timeout", "ingest_sources_refresh_seconds", "retention_hours", "stream_poll_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"MAILWATCH_{name.upper()} must be positive")
        if self.http_listen:
            http_host, _, http_port = self.http_listen.rpartition(":")
            if not http_host or not http_port.isdigit():
                raise ConfigError(f"MAILWATCH_HTTP_LISTEN must be HOST:PORT, got {self.http_listen!r}")
        if self.push_enabled and not self.http_listen:
            raise ConfigError("MAILWATCH_PUSH_ENABLED needs MAILWATCH_HTTP_LISTEN (where Pub/Sub pushes to)")
        if self.push_enabled and self.push_verify_token and not (self.push_audience and self.push_service_account_email):
            raise ConfigError(
                "push needs MAILWATCH_PUSH_AUDIENCE and MAILWATCH_PUSH_SERVICE_ACCOUNT_EMAIL "
                "(or MAILWATCH_PUSH_VERIFY_TOKEN=false on a private network)"
            )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("MAILWATCH_TLS_CERT_FILE and MAILWATCH_TLS_KEY_FILE go together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError("MAILWATCH_TLS_CLIENT_CA_FILE (mutual TLS) needs MAILWATCH_TLS_CERT_FILE and MAILWATCH_TLS_KEY_FILE")
        if self.push_enabled and self.push_verify_token and not self.push_issuers:
            raise ConfigError("MAILWATCH_PUSH_ISSUERS must name at least one token issuer")
        if self.log_format not in ("json", "text"):
            raise ConfigError(f"MAILWATCH_LOG_FORMAT must be json or text, got {self.log_format!r}")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the psycopg 3 driver named, as SQLAlchemy wants it."""
        return urls.sqlalchemy_url(self.database_url)


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _parse(name: str, kind, raw: str):
    kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
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
        raise ConfigError(f"MAILWATCH_{name.upper()} must be {expected}, got {raw!r}") from None
    return raw
