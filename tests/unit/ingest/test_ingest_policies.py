"""Pure policies of the pull loop and the push endpoint (no Pub/Sub, no database)."""

from __future__ import annotations

import pytest

from mailwatch.ingest.pull import PullIngestor
from mailwatch.ingest.push import OidcVerifier, PushAuth, PushAuthError, _bearer

AUD = "https://svc.example.com/push"
EMAIL = "pusher@p.iam.gserviceaccount.com"


def _ingestor(**kw) -> PullIngestor:
    return PullIngestor(sessionmaker=None, subscriptions=["projects/p/subscriptions/s"], **kw)


def test_pull_size_shrinks_when_a_batch_is_too_big_and_grows_back():
    ingestor = _ingestor(batch_size=1000, max_batch_bytes=1_000_000)
    # 1000 messages of 10 KB = 10 MB > 1 MB: ask for ~100 next time.
    assert ingestor._next_pull_size(1000, 1000, 10_000_000) == 100
    # Huge single messages still pull one at a time, never zero.
    assert ingestor._next_pull_size(100, 1, 50_000_000) == 1
    # Small batches double the size back up to the cap.
    assert ingestor._next_pull_size(100, 100, 10_000) == 200
    assert ingestor._next_pull_size(800, 10, 1_000) == 1000


@pytest.mark.parametrize("kw", [{"batch_size": 0}, {"batch_size": 1001}, {"concurrency": 0}])
def test_invalid_settings_are_refused(kw):
    with pytest.raises(ValueError):
        _ingestor(**kw)


def test_backoff_doubles_up_to_the_cap():
    ingestor = _ingestor(backoff_initial=0.5, backoff_max=4)
    delays = [0.5]
    for _ in range(5):
        delays.append(ingestor._next_backoff(delays[-1]))
    assert delays == [0.5, 1, 2, 4, 4, 4]


async def test_disabled_or_without_subscriptions_start_is_a_no_op():
    for ingestor in (_ingestor(enabled=False), PullIngestor(None, [])):
        await ingestor.start()
        assert not ingestor.running
        await ingestor.stop()


@pytest.mark.parametrize(
    "header, expected",
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("Bearer   abc  ", "abc"),
        ("Bearer ", None),
        ("Basic abc", None),
        ("abc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_header(header, expected):
    assert _bearer(header) == expected


GOOD = {"aud": AUD, "iss": "https://accounts.google.com", "email": EMAIL, "email_verified": True}


@pytest.mark.parametrize(
    "claims, reason",
    [
        ({**GOOD, "aud": "https://other"}, "wrong_audience"),
        ({**GOOD, "aud": None}, "wrong_audience"),
        ({**GOOD, "iss": "https://evil"}, "wrong_issuer"),
        ({**GOOD, "email": "x@y"}, "wrong_email"),
        ({k: v for k, v in GOOD.items() if k != "email"}, "wrong_email"),
        ({**GOOD, "email_verified": False}, "email_not_verified"),
        ({**GOOD, "email_verified": "true"}, "email_not_verified"),
        ({k: v for k, v in GOOD.items() if k != "email_verified"}, "email_not_verified"),
    ],
)
def test_claims_for_someone_else_are_forbidden(claims, reason):
    verifier = OidcVerifier(PushAuth(audience=AUD, service_account_email=EMAIL))
    try:
        with pytest.raises(PushAuthError) as caught:
            verifier._check_claims(claims)
        assert (caught.value.status, caught.value.reason) == (403, reason)
    finally:
        verifier.close()


def test_good_claims_pass_including_list_audience_and_bare_issuer():
    verifier = OidcVerifier(PushAuth(audience=AUD, service_account_email=EMAIL))
    try:
        assert verifier._check_claims(GOOD) == GOOD
        claims = {**GOOD, "aud": ["x", AUD], "iss": "accounts.google.com"}
        assert verifier._check_claims(claims) == claims
    finally:
        verifier.close()
