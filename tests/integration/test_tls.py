"""TLS and mutual TLS on the gRPC port: real handshakes with certificates made here,
refusals that leave the server healthy, and certificate rotation without a restart."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mailwatch.config import ConfigError, Settings
from mailwatch.tls import CertificateFiles
from mailwatch_client import AsyncMailwatchClient, TLSConfig
from tests.fixtures.certificates import CertificateAuthority
from tests.fixtures.service import OPERATOR_TOKEN

pytestmark = pytest.mark.integration


async def health(target: str, credentials: grpc.ChannelCredentials | None) -> int:
    """The server's health status over a fresh channel (plaintext when `credentials` is None)."""
    if credentials is None:
        channel = grpc.aio.insecure_channel(target)
    else:
        channel = grpc.aio.secure_channel(target, credentials)
    async with channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=20)
        return response.status


async def refused(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health(target, credentials)
    return caught.value


@pytest.fixture
def pki(tmp_path):
    """A CA, a server certificate it issued (files in tmp_path) and a client certificate it issued."""
    ca = CertificateAuthority("mailwatch CA")
    server_cert, server_key = ca.issue("mailwatch", server=True).write(tmp_path, "server")
    client = ca.issue("consumer", server=False)
    return {
        "ca": ca, "ca_file": ca.write(tmp_path, "ca"), "cert_file": server_cert, "key_file": server_key,
        "client": client, "dir": tmp_path,
    }


async def test_tls_serves_trusting_clients_and_refuses_plaintext_and_untrusting_ones(make_service, pki):
    async with make_service(tls_cert_file=str(pki["cert_file"]), tls_key_file=str(pki["key_file"])) as service:
        trusting = grpc.ssl_channel_credentials(root_certificates=pki["ca"].cert_pem)
        assert await health(service.target, trusting) == health_pb2.HealthCheckResponse.SERVING

        plaintext = await refused(service.target, None)
        assert plaintext.code() == grpc.StatusCode.UNAVAILABLE
        # A client that trusts another CA rejects the server's certificate.
        other_ca = CertificateAuthority("someone else")
        untrusting = await refused(service.target, grpc.ssl_channel_credentials(root_certificates=other_ca.cert_pem))
        assert untrusting.code() == grpc.StatusCode.UNAVAILABLE

        # The refusals cost the server nothing: the next trusting client is served.
        assert await health(service.target, trusting) == health_pb2.HealthCheckResponse.SERVING


async def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(make_service, pki):
    async with make_service(
        tls_cert_file=str(pki["cert_file"]), tls_key_file=str(pki["key_file"]), tls_client_ca_file=str(pki["ca_file"]),
    ) as service:
        no_client_cert = await refused(service.target, grpc.ssl_channel_credentials(root_certificates=pki["ca"].cert_pem))
        assert no_client_cert.code() == grpc.StatusCode.UNAVAILABLE

        stranger = CertificateAuthority("stranger").issue("intruder", server=False)
        foreign_cert = await refused(service.target, grpc.ssl_channel_credentials(
            root_certificates=pki["ca"].cert_pem, private_key=stranger.key_pem, certificate_chain=stranger.cert_pem,
        ))
        assert foreign_cert.code() == grpc.StatusCode.UNAVAILABLE

        # The client library, given the CA and a client certificate as files, is served.
        client_cert, client_key = pki["client"].write(pki["dir"], "client")
        tls = TLSConfig.from_files(ca_file=str(pki["ca_file"]), cert_file=str(client_cert), key_file=str(client_key))
        async with AsyncMailwatchClient(service.target, operator_token=OPERATOR_TOKEN, tls=tls) as operator:
            tenant = await operator.create_tenant("tls-tenant")
            key = (await operator.create_api_key(tenant_id=tenant.id)).key
        async with AsyncMailwatchClient(service.target, key, tls=tls) as client:
            page = await client.list_mailboxes()
        assert page.items == []


async def test_rotated_certificate_files_take_effect_without_a_restart(make_service, pki):
    async with make_service(tls_cert_file=str(pki["cert_file"]), tls_key_file=str(pki["key_file"])) as service:
        old = grpc.ssl_channel_credentials(root_certificates=pki["ca"].cert_pem)
        assert await health(service.target, old) == health_pb2.HealthCheckResponse.SERVING

        # cert-manager renews with a new CA: the files are replaced in place.
        new_ca = CertificateAuthority("renewed CA")
        new_ca.issue("mailwatch", server=True).write(pki["dir"], "server")
        new = grpc.ssl_channel_credentials(root_certificates=new_ca.cert_pem)

        assert await health(service.target, new) == health_pb2.HealthCheckResponse.SERVING
        stale = await refused(service.target, old)
        assert stale.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_half_done_rotation_keeps_the_last_good_certificate(make_service, pki):
    async with make_service(tls_cert_file=str(pki["cert_file"]), tls_key_file=str(pki["key_file"])) as service:
        trusting = grpc.ssl_channel_credentials(root_certificates=pki["ca"].cert_pem)
        # Only the key has been replaced so far: it does not match the certificate.
        replacement = pki["ca"].issue("mailwatch", server=True)
        pki["key_file"].write_bytes(replacement.key_pem)
        assert await health(service.target, trusting) == health_pb2.HealthCheckResponse.SERVING
        # Then the certificate follows, and the pair is used.
        pki["cert_file"].write_bytes(replacement.cert_pem)
        assert await health(service.target, trusting) == health_pb2.HealthCheckResponse.SERVING


def test_unusable_tls_files_stop_startup_with_a_reason(pki):
    other = pki["ca"].issue("other", server=True)
    mismatched = pki["dir"] / "other.key"
    mismatched.write_bytes(other.key_pem)
    with pytest.raises(ConfigError, match="does not match"):
        CertificateFiles(str(pki["cert_file"]), str(mismatched)).load()
    with pytest.raises(ConfigError, match="cannot read"):
        CertificateFiles(str(pki["dir"] / "missing.crt"), str(pki["key_file"])).load()
    with pytest.raises(ConfigError, match="go together"):
        Settings.from_env({}, database_url="postgresql://x/y", tls_cert_file=str(pki["cert_file"]))
    with pytest.raises(ConfigError, match="needs MAILWATCH_TLS_CERT_FILE"):
        Settings.from_env({}, database_url="postgresql://x/y", tls_client_ca_file=str(pki["ca_file"]))
