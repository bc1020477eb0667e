"""The Gmail client's credential cache: keyed by tenant and full secret, never by public ids alone."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailwatch.config import GmailSettings
from mailwatch.domain.errors import GmailAuthFailed
from mailwatch.domain.models import ServiceAccountCredential
from mailwatch.gmail.client import GmailClient, _fingerprint


def _pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


INFO = {
    "type": "service_account",
    "client_email": "robot@project.iam.gserviceaccount.com",
    "private_key_id": "abc123",
    "token_uri": "https://oauth2.googleapis.com/token",
}


def test_cache_key_covers_the_private_key_and_the_tenant():
    tenant = uuid.uuid4()
    one = ServiceAccountCredential(info={**INFO, "private_key": _pem()}, subject="a@example.com")
    other = ServiceAccountCredential(info={**INFO, "private_key": _pem()}, subject="a@example.com")
    assert _fingerprint(one, tenant) != _fingerprint(other, tenant), "same public ids, other private key"
    assert _fingerprint(one, tenant) != _fingerprint(one, uuid.uuid4()), "same key, other tenant"
    assert _fingerprint(one, tenant) == _fingerprint(
        ServiceAccountCredential(info=dict(reversed(list(one.info.items()))), subject="a@example.com"), tenant
    ), "stable across key order"


async def test_a_stored_key_that_cannot_sign_is_an_auth_failure():
    """A key stored before registration checked keys must end as AUTH_FAILED, not an unexpected error."""
    client = GmailClient(GmailSettings(api_endpoint="http://127.0.0.1:9/", token_uri="http://127.0.0.1:9/token"))
    try:
        broken = ServiceAccountCredential(info={**INFO, "private_key": "garbage"}, subject="a@example.com")
        with pytest.raises(GmailAuthFailed) as caught:
            await client.profile(broken, "a@example.com", tenant_id=uuid.uuid4())
        assert "garbage" not in caught.value.message
    finally:
        client.close()
