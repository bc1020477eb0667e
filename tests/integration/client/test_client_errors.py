"""Typed errors, retries of idempotent calls on UNAVAILABLE, and deadlines, against a real mailwatch."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest

from mailwatch.secrets import generate_key
from mailwatch_client import (
    AdminDisabledError,
    AlreadyExistsError,
    AsyncMailwatchClient,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    MailwatchClient,
    NO_RETRY,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    RetryConfig,
    RPCError,
    UnauthenticatedError,
    UnavailableError,
)
from tests.fixtures.waiting import stays
from mailwatch_devstack.ports import free_port
from tests.integration.client.conftest import api_key_of, sa_credentials

pytestmark = pytest.mark.integration

QUICK = RetryConfig(initial_backoff=0.05, max_backoff=0.2, max_attempts=5)


async def test_each_typed_error(service, operator_token):
    _, auth = await service.new_tenant()
    other_tenant_id, other_auth = await service.new_tenant()
    sim = service.sim
    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client, \
            AsyncMailwatchClient(service.target, api_key_of(other_auth)) as other:
        theirs = await other.register_mailbox("own@example.com", credentials=sa_credentials(sim, "own@example.com"))

        with pytest.raises(NotFoundError) as caught:  # another tenant's mailbox looks missing
            await client.get_mailbox(theirs.id)
        assert caught.value.reason == "NOT_FOUND" and caught.value.domain == "mailwatch.dev"
        with pytest.raises(NotFoundError):
            await client.stop_mailbox(str(uuid.uuid4()))

        with pytest.raises(InvalidArgumentError) as caught:
            await client.list_mailboxes(page_size=-1)
        assert [v.field for v in caught.value.field_violations] == ["page_size"]
        assert caught.value.request_id  # the server's request id, for its logs
        with pytest.raises(InvalidArgumentError) as caught:
            await client.register_mailbox("not an address", credentials=sa_credentials(sim, "x@example.com"))
        assert caught.value.field_violations and caught.value.field_violations[0].field == "email_address"

        with pytest.raises(FailedPreconditionError) as caught:
            sim.create_mailbox("gone@example.com")
            credentials = sa_credentials(sim, "gone@example.com")
            sim.revoke_user("gone@example.com")
            await client.register_mailbox("gone@example.com", credentials=credentials)
        assert caught.value.reason == "GMAIL_AUTH_FAILED"

        sim.inject_fault("rateLimitExceeded", method="users.watch", count=1, retry_after=7)
        with pytest.raises(RateLimitedError) as caught:
            # Not retried here (NO_RETRY): the client would wait the 7 s and try again.
            await client.register_mailbox("busy@example.com", credentials=sa_credentials(sim, "busy@example.com"),
                                          retry=NO_RETRY)
        assert caught.value.reason == "GMAIL_RATE_LIMITED" and caught.value.retry_delay == pytest.approx(7, abs=1)

    async with AsyncMailwatchClient(service.target, "not-a-key") as stranger:
        with pytest.raises(UnauthenticatedError) as caught:
            await stranger.list_mailboxes()
        assert isinstance(caught.value, RPCError)

    async with AsyncMailwatchClient(service.target, operator_token=operator_token) as admin:
        name = f"dup-{uuid.uuid4().hex[:6]}"
        await admin.create_tenant(name)
        with pytest.raises(AlreadyExistsError):
            await admin.create_tenant(name)
        with pytest.raises(NotFoundError):
            await admin.create_api_key(tenant_name="no-such-tenant")
    async with AsyncMailwatchClient(service.target, operator_token="wrong") as intruder:
        with pytest.raises((UnauthenticatedError, PermissionDeniedError)):
            await intruder.list_tenants()
    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as tenant_as_admin:
        with pytest.raises((UnauthenticatedError, PermissionDeniedError)):  # API keys are no operator credential
            await tenant_as_admin.list_tenants()

    # A deadline the server cannot meet: Gmail takes a second to answer getProfile.
    # (A microsecond deadline on a quick call was not enough: gRPC rounds a deadline
    # up to the next millisecond, and an idle machine answered within it.)
    credentials = sa_credentials(sim, "slow@example.com")
    sim.add_latency("users.getProfile", 1.0, user="slow@example.com")
    try:
        with pytest.raises(DeadlineExceededError):
            async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
                await client.register_mailbox("slow@example.com", credentials=credentials, timeout=0.1)
    finally:
        sim.clear_latency()


async def test_admin_disabled_is_its_own_error(make_service):
    async with make_service(operator_token="") as service:
        async with AsyncMailwatchClient(service.target, operator_token="anything") as admin:
            with pytest.raises(AdminDisabledError) as caught:
                await admin.list_tenants()
        assert isinstance(caught.value, PermissionDeniedError) and caught.value.reason == "ADMIN_DISABLED"


async def test_idempotent_calls_are_retried_on_unavailable(service):
    _, auth = await service.new_tenant()
    sim = service.sim
    credentials = sa_credentials(sim, "flaky@example.com")
    # Gmail answers 500 twice: the server says UNAVAILABLE twice, the third attempt succeeds.
    sim.inject_fault("backendError", method="users.watch", count=2)
    sim.reset_counters()
    async with AsyncMailwatchClient(service.target, api_key_of(auth), retry=QUICK) as client:
        mailbox = await client.register_mailbox("flaky@example.com", credentials=credentials)
    assert mailbox.id
    assert sim.counters()["calls"]["flaky@example.com"]["users.watch"] == 3

    # The retry budget is the policy's: one attempt only, the error surfaces.
    other = sa_credentials(sim, "flaky2@example.com")
    sim.inject_fault("backendError", method="users.watch", count=1)

    def once():
        with MailwatchClient(service.target, api_key_of(auth)) as client:
            with pytest.raises(UnavailableError) as caught:
                client.register_mailbox("flaky2@example.com", credentials=other, retry=RetryConfig(max_attempts=1))
            return caught.value

    error = await asyncio.to_thread(once)
    assert error.reason == "GMAIL_UNAVAILABLE"


async def test_calls_wait_for_a_server_that_is_not_up_yet(make_service):
    same = {"listen": f"127.0.0.1:{free_port()}", "secret_keys": (generate_key(),)}
    async with make_service(**same) as service:
        _, auth = await service.new_tenant()
    key = api_key_of(auth)
    patient = RetryConfig(initial_backoff=0.1, max_backoff=0.5, max_attempts=0)
    async with AsyncMailwatchClient(service.target, key, retry=patient, timeout=30) as client:
        started = time.monotonic()
        call = asyncio.create_task(client.list_mailboxes())
        blocking = asyncio.create_task(asyncio.to_thread(_sync_list, service.target, key, patient))
        # While no server listens, both keep retrying (backoff 0.1 to 0.5 s: a second is several
        # attempts, each failing at once): neither call ends.
        await stays(lambda: not call.done() and not blocking.done(), 1.0, what="calls retrying")
        async with make_service(**same):
            page = await asyncio.wait_for(call, 20)
            sync_page = await asyncio.wait_for(blocking, 20)
        assert len(page) == 0 and len(sync_page) == 0
        assert time.monotonic() - started >= 1.0


def _sync_list(target, key, retry):
    with MailwatchClient(target, key, retry=retry, timeout=30) as client:
        return client.list_mailboxes()


async def test_deadline_bounds_all_attempts_and_non_idempotent_calls_are_not_retried():
    target = f"127.0.0.1:{free_port()}"  # nobody listens
    forever = RetryConfig(initial_backoff=0.05, max_backoff=0.2, max_attempts=0)
    async with AsyncMailwatchClient(target, "key", operator_token="op", retry=forever) as client:
        started = time.monotonic()
        with pytest.raises((UnavailableError, DeadlineExceededError)):
            await client.get_mailbox(str(uuid.uuid4()), timeout=1.0)
        assert 0.5 <= time.monotonic() - started < 3.0

        started = time.monotonic()
        with pytest.raises(UnavailableError):
            await client.create_tenant("never", timeout=30)
        # One attempt, no backoff: each attempt at this port fails at once, so a retried call would
        # take its whole 30 s deadline; 10 s is room a loaded host cannot eat (milliseconds on a quiet one).
        assert time.monotonic() - started < 10.0

    def blocking():
        with MailwatchClient(target, "key", retry=forever) as client:
            started = time.monotonic()
            with contextlib.suppress(UnavailableError, DeadlineExceededError):
                client.get_mailbox(str(uuid.uuid4()), timeout=1.0)
                raise AssertionError("expected a failure")
            return time.monotonic() - started

    assert 0.5 <= await asyncio.to_thread(blocking) < 3.0
