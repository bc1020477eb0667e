"""Frozen configuration objects: retries, TLS, keepalive."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryConfig:
    """Exponential backoff with jitter for retrying UNAVAILABLE, and RESOURCE_EXHAUSTED when the
    server says when to come back (RetryInfo: a rate limit); a retry waits at least that long.

    Only idempotent calls are retried (Google AIP-194): every read, plus
    RegisterMailbox, StopMailbox and RevokeApiKey, which the API documents as
    idempotent. CreateTenant and CreateApiKey are never retried. A call's
    `timeout` bounds all its attempts together.

    `max_attempts` counts the first attempt; 0 means no limit (only the
    timeout stops it). Attempt n (n >= 1 failed attempts so far) waits
    `min(max_backoff, initial_backoff * multiplier**(n-1))`, scattered by
    ±`jitter` (a fraction) so many clients do not retry in lockstep.
    """

    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_attempts: int = 6

    def __post_init__(self) -> None:
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoffs must not be negative")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        if self.max_attempts < 0:
            raise ValueError("max_attempts must be 0 (unlimited) or positive")

    def backoff(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after `failures` consecutive failed attempts (>= 1)."""
        try:
            grown = self.initial_backoff * self.multiplier ** max(0, failures - 1)
        except OverflowError:  # a stream failing a thousand times in a row: long past max_backoff
            grown = self.max_backoff
        base = min(self.max_backoff, grown)
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))

    def allows(self, attempts: int) -> bool:
        """Whether another attempt may follow `attempts` attempts made so far."""
        return self.max_attempts == 0 or attempts < self.max_attempts


#: Never retry.
NO_RETRY = RetryConfig(max_attempts=1)

#: How a change stream reconnects: patiently and forever (until the caller stops iterating).
DEFAULT_STREAM_RETRY = RetryConfig(initial_backoff=0.2, max_backoff=10.0, max_attempts=0)


@dataclass(frozen=True)
class TLSConfig:
    """TLS for the channel. All fields optional: `TLSConfig()` trusts the system roots.

    `client_certificate` and `client_private_key` (PEM) enable mutual TLS;
    `server_name` overrides the name checked against the server's certificate
    (when connecting by IP address, or through a proxy).
    """

    root_certificates: bytes | None = None
    client_certificate: bytes | None = None
    client_private_key: bytes | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.client_certificate is None) != (self.client_private_key is None):
            raise ValueError("client_certificate and client_private_key go together")

    @classmethod
    def from_files(
        cls,
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        server_name: str | None = None,
    ) -> "TLSConfig":
        """A config from PEM files: a CA to trust instead of the system roots, and
        a client certificate and key for mutual TLS. The files are read once, now."""

        def read(path: str | None) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()

        return cls(
            root_certificates=read(ca_file),
            client_certificate=read(cert_file),
            client_private_key=read(key_file),
            server_name=server_name,
        )


@dataclass(frozen=True)
class KeepAliveConfig:
    """HTTP/2 keepalive pings, to notice a dead connection while a call is open.

    Off by default: the server's stream heartbeats (and the stream's idle
    timeout) already detect dead streams, and servers refuse pings that come
    more often than they allow (gRPC servers default to one per 5 minutes
    without data) by closing the connection.
    """

    interval: float = 60.0
    timeout: float = 20.0
