"""The simulator's own OpenID Connect issuer: the key that signs Pub/Sub push tokens.

Pub/Sub signs a push request's `Authorization: Bearer` token as Google
(`iss` https://accounts.google.com, keys at /oauth2/v1/certs). Without Google,
the simulator is the issuer: its base URL is `iss`, and it publishes its key the
way Google does, so a receiver verifies the token with the same code as in
production pointed at the simulator's certificates URL:

* `/oauth2/v1/certs`: `{kid: x509 PEM}` (what google-auth's `verify_token`
  reads by default);
* `/oauth2/v3/certs`: the same key as a JWK set;
* `/.well-known/openid-configuration`: issuer and `jwks_uri`.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

TOKEN_LIFETIME_SECONDS = 3600  # Google's ID tokens live one hour
CERTS_PATH = "/oauth2/v1/certs"
JWKS_PATH = "/oauth2/v3/certs"
DISCOVERY_PATH = "/.well-known/openid-configuration"


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class OidcIssuer:
    """An RSA key with a self-signed certificate; `url` is set once the simulator listens."""

    def __init__(self, url: str = "") -> None:
        self.url = url
        self.key_id = secrets.token_hex(20)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
        self._signer = crypt.RSASigner.from_string(pem, key_id=self.key_id)
        self._certificate = self._self_signed()

    def _self_signed(self) -> str:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gmail-sim OIDC issuer")])
        now = dt.datetime.now(dt.timezone.utc)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
            .sign(self._key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def id_token(self, *, audience: str, email: str, subject: str) -> str:
        """An ID token as Pub/Sub sends for a push subscription's service account.

        Times are real (not the simulated clock): the receiver checks them
        against its own clock.
        """
        if not self.url:
            raise RuntimeError("the issuer's URL is not known yet (the simulator is not listening)")
        now = int(time.time())
        claims = {
            "iss": self.url, "aud": audience, "azp": subject, "sub": subject,
            "email": email, "email_verified": True, "iat": now, "exp": now + TOKEN_LIFETIME_SECONDS,
        }
        return jwt.encode(self._signer, claims).decode("ascii")

    def certs(self) -> dict:
        return {self.key_id: self._certificate}

    def jwks(self) -> dict:
        numbers = self._key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.key_id,
                          "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}]}

    def discovery(self) -> dict:
        return {"issuer": self.url, "jwks_uri": f"{self.url}{JWKS_PATH}",
                "id_token_signing_alg_values_supported": ["RS256"],
                "subject_types_supported": ["public"], "response_types_supported": ["id_token"]}
