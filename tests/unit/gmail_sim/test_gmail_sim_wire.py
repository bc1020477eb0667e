"""Batch envelope parsing and the OAuth authority, without a server."""

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from mailwatch_devstack.gmail_sim.auth import GOOGLE_TOKEN_URI, JWT_BEARER, TokenAuthority
from mailwatch_devstack.gmail_sim.batch import _parse_inner, handle_batch
from mailwatch_devstack.gmail_sim.clock import SimClock
from mailwatch_devstack.gmail_sim.errors import GmailError, OAuthError
from mailwatch_devstack.gmail_sim.state import SimState


def test_parse_inner_request_line_headers_body():
    inner = _parse_inner("GET /gmail/v1/users/me/history?startHistoryId=5&historyTypes=a&historyTypes=b HTTP/1.1\r\n"
                         "Authorization: Bearer tok\r\ncontent-length: 2\r\n\r\n{}")
    assert inner.method == "GET" and inner.path == "/gmail/v1/users/me/history"
    assert inner.query.getall("historyTypes") == ["a", "b"]
    assert inner.headers["authorization"] == "Bearer tok" and inner.body == b"{}"
    absolute = _parse_inner("POST http://host:1/gmail/v1/users/me/stop HTTP/1.1\n\n")
    assert absolute.path == "/gmail/v1/users/me/stop" and absolute.body == b""


def _multipart(parts, boundary="XyZ"):
    body = "".join(f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <{cid}>\r\n\r\n{payload}\r\n"
                   for cid, payload in parts)
    return f'multipart/mixed; boundary="{boundary}"', (body + f"--{boundary}--\r\n").encode()


async def test_batch_answers_parts_in_order_with_response_content_ids():
    state = SimState()
    content_type, body = _multipart([("base + 1", "GET /gmail/v1/users/me/profile HTTP/1.1\r\n\r\n"),
                                     ("base + 2", "garbage")])
    out_type, out = await handle_batch(state, content_type, body)
    text = out.decode()
    assert out_type.startswith("multipart/mixed; boundary=")
    assert text.index("Content-ID: <response-base + 1>") < text.index("Content-ID: <response-base + 2>")
    assert "HTTP/1.1 401 Unauthorized" in text and "HTTP/1.1 400 Bad Request" in text


async def test_batch_limits_and_envelope_errors():
    state = SimState()
    too_many = _multipart([(f"b + {i}", "GET /x HTTP/1.1\r\n\r\n") for i in range(101)])
    with pytest.raises(GmailError) as error:
        await handle_batch(state, *too_many)
    assert error.value.code == 400
    with pytest.raises(GmailError):
        await handle_batch(state, "application/json", b"{}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _assertion(key_json, claims, header=None):
    private = serialization.load_pem_private_key(key_json["private_key"].encode(), password=None)
    head = _b64(json.dumps(header or {"alg": "RS256", "typ": "JWT", "kid": key_json["private_key_id"]}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = private.sign(f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{payload}.{_b64(signature)}"


@pytest.fixture
def authority():
    clock = SimClock()
    return TokenAuthority(clock, lambda email: "a@x.com" if email.lower() in ("a@x.com", "alias@x.com") else None), clock


def test_jwt_grant_verifies_signature_claims_and_expiry(authority):
    auth, clock = authority
    key = auth.create_service_account(token_uri="http://sim/token")
    now = int(time.time())
    claims = {"iss": key["client_email"], "aud": GOOGLE_TOKEN_URI, "iat": now, "exp": now + 3600,
              "scope": "https://www.googleapis.com/auth/gmail.readonly", "sub": "a@x.com"}
    # No domain-wide delegation yet: the key impersonates nobody.
    with pytest.raises(OAuthError) as undelegated:
        auth.grant({"grant_type": JWT_BEARER, "assertion": _assertion(key, claims)}, "http://sim/token")
    assert undelegated.value.error == "unauthorized_client" and undelegated.value.status == 401
    auth.grant_delegation("X.com", key["client_id"], ["https://www.googleapis.com/auth/gmail.readonly"])
    email, body = auth.grant({"grant_type": JWT_BEARER, "assertion": _assertion(key, claims)}, "http://sim/token")
    assert email == "a@x.com" and body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert auth.authenticate("Bearer " + body["access_token"]).email == "a@x.com"
    clock.advance(3600)
    with pytest.raises(GmailError) as expired:
        auth.authenticate("Bearer " + body["access_token"])
    assert expired.value.code == 401
    # Only a primary address can be impersonated, not an alias of it.
    with pytest.raises(OAuthError) as alias:
        auth.grant({"grant_type": JWT_BEARER, "assertion": _assertion(key, dict(claims, sub="Alias@x.com"))},
                   "http://sim/token")
    assert alias.value.body() == {"error": "invalid_request",
                                  "error_description": "Invalid impersonation prn email address."}

    tampered = _assertion(key, claims).split(".")
    tampered[1] = _b64(json.dumps(dict(claims, sub="b@x.com")).encode())
    for bad, reason in [
        (".".join(tampered), "Invalid JWT Signature."),
        (_assertion(key, dict(claims, aud="https://elsewhere/token")), "Invalid JWT: Failed audience check."),
        (_assertion(key, dict(claims, iat=now - 7200, exp=now - 3600)), None),
        (_assertion(key, dict(claims, sub="nobody@x.com")), "Invalid email or User ID"),
    ]:
        with pytest.raises(OAuthError) as refused:
            auth.grant({"grant_type": JWT_BEARER, "assertion": bad}, "http://sim/token")
        assert refused.value.error == "invalid_grant" and refused.value.status == 400
        if reason:
            assert refused.value.description == reason


def test_refresh_grant_and_revocation(authority):
    auth, _ = authority
    client_id, secret = auth.create_oauth_client()
    refresh = auth.issue_refresh_token(client_id, "a@x.com")
    form = {"grant_type": "refresh_token", "client_id": client_id, "client_secret": secret, "refresh_token": refresh}
    _, body = auth.grant(form, "http://sim/token")
    auth.revoke_user("a@x.com")
    with pytest.raises(OAuthError) as refused:
        auth.grant(form, "http://sim/token")
    assert refused.value.body() == {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    with pytest.raises(GmailError):
        auth.authenticate("Bearer " + body["access_token"])
    auth.restore_user("a@x.com")
    assert auth.authenticate("Bearer " + body["access_token"]).email == "a@x.com"
    with pytest.raises(OAuthError) as wrong:
        auth.grant(dict(form, client_secret="nope"), "http://sim/token")
    assert wrong.value.error == "invalid_client" and wrong.value.status == 401
