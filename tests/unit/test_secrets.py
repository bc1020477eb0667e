"""Credentials at rest: round trip, key rotation, failures that reveal nothing."""

from __future__ import annotations

import pytest

from mailwatch.domain.errors import CredentialUndecryptable, SecretsNotConfigured
from mailwatch.domain.models import OAuthCredential, ServiceAccountCredential
from mailwatch.secrets import SecretBox, credential_kind, generate_key

PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQ-not-a-real-key\n-----END PRIVATE KEY-----\n"
SERVICE_ACCOUNT = ServiceAccountCredential(
    info={
        "type": "service_account",
        "client_email": "sync@project.iam.gserviceaccount.com",
        "private_key": PRIVATE_KEY,
        "token_uri": "https://oauth2.googleapis.com/token",
    },
    subject="alice@example.com",
)
OAUTH = OAuthCredential(client_id="client-123", client_secret="s3cr3t-value", refresh_token="1//refresh-token-value")


@pytest.mark.parametrize("credential", [SERVICE_ACCOUNT, OAUTH], ids=["service_account", "oauth"])
def test_round_trip(credential):
    box = SecretBox([generate_key()])
    ciphertext = box.encrypt_credential(credential)
    assert isinstance(ciphertext, bytes)
    assert box.decrypt_credential(ciphertext) == credential
    assert type(box.decrypt_credential(ciphertext)) is type(credential)


def test_ciphertext_holds_no_plaintext():
    ciphertext = SecretBox([generate_key()]).encrypt_credential(OAUTH)
    for secret in (b"s3cr3t-value", b"refresh-token-value", b"client-123"):
        assert secret not in ciphertext


def test_rotation_first_key_encrypts_all_keys_decrypt():
    old, new = generate_key(), generate_key()
    old_ciphertext = SecretBox([old]).encrypt_credential(OAUTH)

    rotated_box = SecretBox([new, old])
    assert rotated_box.decrypt_credential(old_ciphertext) == OAUTH
    new_ciphertext = rotated_box.encrypt_credential(OAUTH)
    assert SecretBox([new]).decrypt_credential(new_ciphertext) == OAUTH

    re_encrypted = rotated_box.rotate(old_ciphertext)
    assert SecretBox([new]).decrypt_credential(re_encrypted) == OAUTH
    with pytest.raises(CredentialUndecryptable):
        SecretBox([old]).decrypt_credential(re_encrypted)


def test_wrong_key_is_a_domain_error_without_secrets():
    key = generate_key()
    ciphertext = SecretBox([key]).encrypt_credential(OAUTH)
    other = generate_key()
    with pytest.raises(CredentialUndecryptable) as caught:
        SecretBox([other]).decrypt_credential(ciphertext)
    message = str(caught.value)
    assert caught.value.reason == "CREDENTIAL_UNDECRYPTABLE"
    assert key not in message and other not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("garbage", [b"", b"not a token", b"gAAAAA" + b"x" * 80])
def test_garbage_ciphertext(garbage):
    with pytest.raises(CredentialUndecryptable):
        SecretBox([generate_key()]).decrypt_credential(garbage)


def test_malformed_plaintext_is_reported_without_content():
    from cryptography.fernet import Fernet

    key = generate_key()
    ciphertext = Fernet(key).encrypt(b'{"v": 1, "kind": "OAUTH", "client_secret": "leak-me"}')
    with pytest.raises(CredentialUndecryptable) as caught:
        SecretBox([key]).decrypt_credential(ciphertext)
    assert "leak-me" not in str(caught.value)
    assert caught.value.__suppress_context__


@pytest.mark.parametrize("keys", [[], [""], ["  ", ""], ()])
def test_no_key_configured(keys):
    with pytest.raises(SecretsNotConfigured) as caught:
        SecretBox(keys)
    assert caught.value.reason == "SECRETS_NOT_CONFIGURED"


def test_invalid_key_message_does_not_echo_the_key():
    bad = "this-is-not-a-fernet-key-but-might-be-a-secret"
    with pytest.raises(SecretsNotConfigured) as caught:
        SecretBox([generate_key(), bad])
    assert bad not in str(caught.value)
    assert "#2" in str(caught.value)


def test_comma_separated_string_is_split_not_iterated():
    a, b = generate_key(), generate_key()
    ciphertext = SecretBox([b]).encrypt_credential(OAUTH)
    assert SecretBox(f"{a}, {b}").decrypt_credential(ciphertext) == OAUTH


def test_reprs_redact_secrets():
    key = generate_key()
    box = SecretBox([key])
    assert key not in repr(box)
    assert "1 key" in repr(box)

    oauth = repr(OAUTH)
    assert "client-123" in oauth  # identifiers stay visible for debugging
    assert "s3cr3t-value" not in oauth and "refresh-token-value" not in oauth

    service_account = repr(SERVICE_ACCOUNT)
    assert "alice@example.com" in service_account
    assert "PRIVATE KEY" not in service_account and "private_key" not in service_account
    assert "PRIVATE KEY" not in str(SERVICE_ACCOUNT)


def test_credential_kind():
    assert credential_kind(OAUTH).value == "OAUTH"
    assert credential_kind(SERVICE_ACCOUNT).value == "SERVICE_ACCOUNT"
    with pytest.raises(TypeError):
        credential_kind("nope")  # type: ignore[arg-type]


def test_generated_keys_are_distinct_valid_keys():
    keys = {generate_key() for _ in range(5)}
    assert len(keys) == 5
    SecretBox(sorted(keys))


class FakeTimer:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_decrypted_credentials_are_kept_per_tenant_and_ciphertext_for_a_bounded_time():
    import uuid

    timer = FakeTimer()
    box = SecretBox([generate_key()], cache_seconds=60, timer=timer)
    ciphertext = box.encrypt_credential(SERVICE_ACCOUNT)
    tenant, other = uuid.uuid4(), uuid.uuid4()
    first = box.decrypt_credential(ciphertext, tenant_id=tenant)
    assert box.decrypt_credential(bytearray(ciphertext), tenant_id=tenant) is first  # kept: not decrypted again
    assert box.decrypt_credential(ciphertext, tenant_id=other) is not first  # another tenant: its own entry
    assert box.decrypt_credential(ciphertext, tenant_id=other) == first
    again = box.encrypt_credential(SERVICE_ACCOUNT)  # a new ciphertext (re-registration) is a new entry
    assert box.decrypt_credential(again, tenant_id=tenant) is not first
    timer.now = 61  # past the bound: decrypted afresh
    assert box.decrypt_credential(ciphertext, tenant_id=tenant) is not first


def test_the_credential_cache_is_bounded_in_size_and_never_keeps_a_failure():
    box = SecretBox([generate_key()], cache_size=2)
    sealed = [box.encrypt_credential(OAUTH) for _ in range(3)]
    first = box.decrypt_credential(sealed[0])
    box.decrypt_credential(sealed[1])
    box.decrypt_credential(sealed[2])  # the oldest entry goes
    assert box.decrypt_credential(sealed[0]) is not first
    foreign = SecretBox([generate_key()]).encrypt_credential(OAUTH)
    for _ in range(2):
        with pytest.raises(CredentialUndecryptable):
            box.decrypt_credential(foreign)
