"""Credentials at rest: round trip, key rotation, failures that reveal nothing."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from mailwatch.domain.errors import CredentialUndecryptable, SecretsNotConfigured
from mailwatch.domain.models import CredentialKind, OAuthCredential, SealedCredential, ServiceAccountCredential
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


def sealed(box: SecretBox, credential, *, row: uuid.UUID | None = None) -> SealedCredential:
    """The credential as the store keeps it: the shared row's part and the mailbox's own."""
    secret = box.seal_shared(credential)
    return SealedCredential(
        sealed_credential_id=row or uuid.uuid4(), kind=secret.kind, digest=secret.digest, ciphertext=secret.ciphertext,
        subject=getattr(credential, "subject", ""), refresh_token_ciphertext=box.seal_refresh_token(credential))


def rotated(box: SecretBox, stored: SealedCredential) -> SealedCredential:
    token = stored.refresh_token_ciphertext
    return dataclasses.replace(stored, ciphertext=box.rotate(stored.ciphertext),
                               refresh_token_ciphertext=None if token is None else box.rotate(token))


@pytest.mark.parametrize("credential", [SERVICE_ACCOUNT, OAUTH], ids=["service_account", "oauth"])
def test_round_trip(credential):
    box = SecretBox([generate_key()])
    stored = sealed(box, credential)
    assert isinstance(stored.ciphertext, bytes)
    assert box.open(stored) == credential
    assert type(box.open(stored)) is type(credential)


def test_the_shared_part_is_the_key_alone_and_its_digest_names_it():
    """A service account's shared part holds no subject and an OAuth client's no refresh token, so
    every mailbox of a key seals to one digest (one row); another key or client secret is another."""
    box = SecretBox([generate_key()])
    alice, bob = SERVICE_ACCOUNT, dataclasses.replace(SERVICE_ACCOUNT, subject="bob@example.com")
    assert box.seal_shared(alice).digest == box.seal_shared(bob).digest
    assert box.seal_shared(alice).ciphertext != box.seal_shared(bob).ciphertext  # Fernet: a fresh IV each time
    assert box.seal_refresh_token(alice) is None
    other_key = dataclasses.replace(SERVICE_ACCOUNT, info={**SERVICE_ACCOUNT.info, "private_key": PRIVATE_KEY + "x"})
    assert box.seal_shared(other_key).digest != box.seal_shared(alice).digest
    other_token = dataclasses.replace(OAUTH, refresh_token="1//another")
    assert box.seal_shared(other_token).digest == box.seal_shared(OAUTH).digest
    assert box.seal_shared(dataclasses.replace(OAUTH, client_secret="x")).digest != box.seal_shared(OAUTH).digest
    assert SecretBox([generate_key()]).seal_shared(OAUTH).digest == box.seal_shared(OAUTH).digest  # not keyed
    stored = sealed(box, bob)
    assert box.open(stored) == bob and box.open(dataclasses.replace(stored, subject="alice@example.com")) == alice


def test_ciphertext_holds_no_plaintext():
    box = SecretBox([generate_key()])
    stored = sealed(box, OAUTH)
    for secret in (b"s3cr3t-value", b"refresh-token-value", b"client-123"):
        assert secret not in stored.ciphertext and secret not in stored.refresh_token_ciphertext


def test_rotation_first_key_encrypts_all_keys_decrypt():
    old, new = generate_key(), generate_key()
    old_stored = sealed(SecretBox([old]), OAUTH)

    rotated_box = SecretBox([new, old])
    assert rotated_box.open(old_stored) == OAUTH
    assert SecretBox([new]).open(sealed(rotated_box, OAUTH)) == OAUTH

    re_encrypted = rotated(rotated_box, old_stored)
    assert SecretBox([new]).open(re_encrypted) == OAUTH
    with pytest.raises(CredentialUndecryptable):
        SecretBox([old]).open(re_encrypted)


def test_wrong_key_is_a_domain_error_without_secrets():
    key = generate_key()
    stored = sealed(SecretBox([key]), OAUTH)
    other = generate_key()
    with pytest.raises(CredentialUndecryptable) as caught:
        SecretBox([other]).open(stored)
    message = str(caught.value)
    assert caught.value.reason == "CREDENTIAL_UNDECRYPTABLE"
    assert key not in message and other not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("garbage", [b"", b"not a token", b"gAAAAA" + b"x" * 80])
def test_garbage_ciphertext(garbage):
    box = SecretBox([generate_key()])
    with pytest.raises(CredentialUndecryptable):
        box.open(dataclasses.replace(sealed(box, OAUTH), ciphertext=garbage))
    with pytest.raises(CredentialUndecryptable):
        box.open(dataclasses.replace(sealed(box, OAUTH), refresh_token_ciphertext=garbage))


def test_malformed_plaintext_is_reported_without_content():
    from cryptography.fernet import Fernet

    key = generate_key()
    ciphertext = Fernet(key).encrypt(b'{"v": 2, "kind": "OAUTH", "client_secret": "leak-me"}')
    stored = SealedCredential(uuid.uuid4(), CredentialKind.OAUTH, b"d", ciphertext)
    with pytest.raises(CredentialUndecryptable) as caught:
        SecretBox([key]).open(stored)
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
    stored = sealed(SecretBox([b]), OAUTH)
    assert SecretBox(f"{a}, {b}").open(stored) == OAUTH


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


def test_decrypted_parts_are_kept_per_tenant_and_row_for_a_bounded_time():
    timer = FakeTimer()
    box = SecretBox([generate_key()], cache_seconds=60, timer=timer)
    row = uuid.uuid4()
    alice = sealed(box, SERVICE_ACCOUNT, row=row)
    bob = dataclasses.replace(alice, subject="bob@example.com")
    tenant, other = uuid.uuid4(), uuid.uuid4()
    first = box.open(alice, tenant_id=tenant)
    assert box.open(bob, tenant_id=tenant).info is first.info  # one key, decrypted once for every mailbox
    assert box.open(dataclasses.replace(alice, ciphertext=box.rotate(alice.ciphertext)),
                    tenant_id=tenant).info is first.info  # re-encrypted: the same plaintext, kept
    assert box.open(alice, tenant_id=other).info is not first.info  # another tenant: its own entry
    assert box.open(alice, tenant_id=other) == first
    replaced = sealed(box, dataclasses.replace(
        SERVICE_ACCOUNT, info={**SERVICE_ACCOUNT.info, "private_key": PRIVATE_KEY + "x"}), row=row)
    assert box.open(replaced, tenant_id=tenant).info["private_key"].endswith("x")  # a new key in the row: new digest
    timer.now = 61  # past the bound: decrypted afresh
    assert box.open(alice, tenant_id=tenant).info is not first.info


def test_the_cache_is_bounded_in_size_and_never_keeps_a_failure():
    box = SecretBox([generate_key()], cache_size=2)
    stored = [sealed(box, SERVICE_ACCOUNT) for _ in range(3)]
    first = box.open(stored[0])
    box.open(stored[1])
    box.open(stored[2])  # the oldest entry goes
    assert box.open(stored[0]).info is not first.info
    foreign = sealed(SecretBox([generate_key()]), OAUTH)
    for _ in range(2):
        with pytest.raises(CredentialUndecryptable):
            box.open(foreign)
