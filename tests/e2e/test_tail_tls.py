"""`mailwatch tail` against a server that requires mutual TLS."""

from __future__ import annotations

import pytest

from mailwatch_client import AsyncMailwatchClient, TLSConfig
from tests.e2e.test_tail import Tail, count
from tests.fixtures.certificates import CertificateAuthority
from tests.fixtures.service import OPERATOR_TOKEN
from tests.integration.client.conftest import sa_credentials

pytestmark = pytest.mark.e2e


async def test_tail_over_mutual_tls_with_a_custom_ca_and_client_certificate(make_service, tmp_path):
    ca = CertificateAuthority()
    ca_file = ca.write(tmp_path, "ca")
    cert_file, key_file = ca.issue("mailwatch", server=True).write(tmp_path, "server")
    client_cert, client_key = ca.issue("tail", server=False).write(tmp_path, "client")
    async with make_service(
        tls_cert_file=str(cert_file), tls_key_file=str(key_file), tls_client_ca_file=str(ca_file),
    ) as service:
        tls = TLSConfig.from_files(ca_file=str(ca_file), cert_file=str(client_cert), key_file=str(client_key))
        async with AsyncMailwatchClient(service.target, operator_token=OPERATOR_TOKEN, tls=tls) as operator:
            tenant = await operator.create_tenant("tail-tls")
            key = (await operator.create_api_key(tenant_id=tenant.id)).key
        async with AsyncMailwatchClient(service.target, key, tls=tls) as client:
            await client.register_mailbox("tls@example.com", credentials=sa_credentials(service.sim, "tls@example.com"))
        message = service.sim.insert_message("tls@example.com", label_ids=["INBOX"])

        tail = await Tail.start(
            service.target, key, "--from", "earliest",
            "--ca-cert", str(ca_file), "--client-cert", str(client_cert), "--client-key", str(client_key),
        )
        try:
            lines = await tail.read_until(count("MESSAGE_ADDED"))
            code, stderr = await tail.interrupt()
        finally:
            tail.kill()
        assert code == 0, stderr
        assert any(f"message={message['id']}" in line for line in lines)


async def test_tail_reports_an_unreadable_ca_file(tmp_path):
    tail = await Tail.start("127.0.0.1:1", "key", "--ca-cert", str(tmp_path / "missing.crt"))
    try:
        code, stderr = await tail.exited()
    finally:
        tail.kill()
    assert code == 2
    assert "TLS" in stderr and "missing.crt" in stderr and "Traceback" not in stderr
