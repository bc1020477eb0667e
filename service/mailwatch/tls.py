"""Server TLS from certificate files that may be replaced while the server runs.

cert-manager (or any rotation) rewrites the mounted certificate, key and CA
files; gRPC's dynamic server credentials ask us for a configuration before
every new handshake, so a changed file takes effect for the next connection
without a restart. Established connections keep the certificate they were
made with, as with any TLS server.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailwatch.config import ConfigError, TlsSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Material:
    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None


class CertificateFiles:
    """The server's certificate chain, key and (for mutual TLS) client CA, as files.

    `fetch()` is gRPC's certificate-configuration fetcher: it returns a new
    configuration when a file changed since the last load, else None (keep the
    current one). A half-finished rotation (a key that does not match the
    certificate yet, an unreadable file) keeps the last good configuration and
    is retried on the next handshake.
    """

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str = "") -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca_file = client_ca_file
        self._lock = threading.Lock()  # the fetcher runs on gRPC's threads
        self._stamp: tuple | None = None

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(path for path in (self.cert_file, self.key_file, self.client_ca_file) if path)

    def _file_stamp(self) -> tuple:
        # stat() follows symlinks, so Kubernetes' atomic ..data symlink swap
        # shows up as a new inode even when sizes and times happen to match.
        stamps = []
        for path in self.paths:
            info = os.stat(path)
            stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
        return tuple(stamps)

    def _read(self) -> _Material:
        with open(self.cert_file, "rb") as f:
            cert_chain = f.read()
        with open(self.key_file, "rb") as f:
            private_key = f.read()
        client_ca = None
        if self.client_ca_file:
            with open(self.client_ca_file, "rb") as f:
                client_ca = f.read()
        _check(cert_chain, private_key, client_ca)
        return _Material(cert_chain, private_key, client_ca)

    def load(self) -> grpc.ServerCertificateConfiguration:
        """Read the files now; raises ConfigError with a one-line reason if they are unusable."""
        with self._lock:
            try:
                stamp = self._file_stamp()
                material = self._read()
            except OSError as exc:
                raise ConfigError(f"TLS files: cannot read {exc.filename}: {exc.strerror}") from None
            self._stamp = stamp
            return _configuration(material)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                stamp = self._file_stamp()
                if stamp == self._stamp:
                    return None
                material = self._read()
            except (OSError, ConfigError) as exc:
                # Mid-rotation or a bad new file: keep serving with the old one.
                log.warning("TLS files changed but cannot be used yet; keeping the current certificate",
                            extra={"reason": str(exc)})
                return None
            self._stamp = stamp
            log.info("TLS certificate reloaded", extra={"cert_file": self.cert_file})
            return _configuration(material)


def _configuration(material: _Material) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.private_key, material.cert_chain)], root_certificates=material.client_ca
    )


def _check(cert_chain: bytes, private_key: bytes, client_ca: bytes | None) -> None:
    """Parse the PEM files and check the key belongs to the certificate (gRPC would only fail the handshakes)."""
    try:
        certificates = x509.load_pem_x509_certificates(cert_chain)
    except ValueError:
        raise ConfigError("MAILWATCH_TLS_CERT_FILE holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(private_key, password=None)
    except (ValueError, TypeError):
        raise ConfigError("MAILWATCH_TLS_KEY_FILE holds no unencrypted PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, public) != certificates[0].public_key().public_bytes(
        serialization.Encoding.PEM, public
    ):
        raise ConfigError("MAILWATCH_TLS_KEY_FILE does not match the certificate in MAILWATCH_TLS_CERT_FILE")
    if client_ca is not None:
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError:
            raise ConfigError("MAILWATCH_TLS_CLIENT_CA_FILE holds no PEM certificate") from None


def server_credentials(settings: TlsSettings) -> grpc.ServerCredentials | None:
    """Credentials for the gRPC port: None (plaintext) unless a certificate is configured.

    With a client CA, clients must present a certificate it signed (mutual TLS).
    """
    if not settings.cert_file:
        return None
    files = CertificateFiles(settings.cert_file, settings.key_file, settings.client_ca_file)
    return grpc.dynamic_ssl_server_credentials(
        files.load(), files.fetch, require_client_authentication=bool(settings.client_ca_file)
    )
