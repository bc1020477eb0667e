"""A registration never borrows credentials derived from another registration's secret.

The Gmail client caches access tokens per credential. Keyed on public
identifiers (client_email, private_key_id, subject), a second tenant could
present the first tenant's identifiers with any private key and have
mailwatch act with the first tenant's token. The simulator counts every
Gmail call and every token it grants per user, so "no call made with the
first tenant's credentials" is checked on both.
"""

from __future__ import annotations

import grpc
import pytest

from mailwatch.v1 import mailbox_service_pb2
from tests.fixtures.factory import service_account_request
from tests.fixtures.rpc import STOPPED, error_details

pytestmark = pytest.mark.integration

VICTIM = "victim@example.com"


@pytest.fixture
async def quiet_service(make_service):
    """No background sync or fallback poll: the victim's Gmail calls are exactly the ones the
    test causes (a poll-triggered history.list would otherwise land at any moment)."""
    async with make_service(sync_enabled=False, poll_enabled=False) as running:
        yield running


def _flip_one_byte(pem: str) -> str:
    lines = pem.splitlines(keepends=True)
    body = lines[5]
    lines[5] = body[:10] + ("B" if body[10] != "B" else "C") + body[11:]
    return "".join(lines)


def _victim_calls(sim) -> dict:
    return dict(sim.counters()["calls"].get(VICTIM, {}))


async def _refused(service, key: dict, auth) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.mailboxes.RegisterMailbox(service_account_request(VICTIM, key), metadata=auth)
    return caught.value


async def _two_tenants_first_registered(service):
    """(first tenant's auth, second tenant's auth, the first's key, its mailbox)."""
    _, first = await service.new_tenant()
    _, second = await service.new_tenant()
    service.sim.create_mailbox(VICTIM)
    key = service.sim.create_service_account_key()
    mailbox = await service.mailboxes.RegisterMailbox(service_account_request(VICTIM, key), metadata=first)
    return first, second, key, mailbox


async def test_another_tenants_identifiers_with_another_private_key_are_refused(quiet_service):
    service = quiet_service
    _, second, key, _ = await _two_tenants_first_registered(service)
    before = _victim_calls(service.sim)
    assert before == {"oauth2.token": 1, "users.getProfile": 1, "users.watch": 1}

    # The second tenant's own (valid, signing) key under the first one's identifiers:
    # the token endpoint checks the signature against the first key, and refuses.
    own = service.sim.create_service_account_key()
    forged = await _refused(service, {**key, "private_key": own["private_key"]}, second)
    assert forged.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = error_details(forged)
    assert info.reason == "GMAIL_AUTH_FAILED"

    # Keys that cannot sign at all never get that far.
    for private_key in (_flip_one_byte(key["private_key"]), "garbage", key["private_key"].replace("\n", "\n\x00", 2)):
        broken = await _refused(service, {**key, "private_key": private_key}, second)
        assert broken.code() == grpc.StatusCode.INVALID_ARGUMENT
        _, bad_request = error_details(broken)
        assert [v.field for v in bad_request.field_violations] == ["service_account.json_key"]
        assert "private_key" in bad_request.field_violations[0].description
        assert private_key not in broken.details()

    assert _victim_calls(service.sim) == before, "no Gmail call and no token with the first tenant's key"
    listed = await service.mailboxes.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=second)
    assert list(listed.mailboxes) == [], "nothing was stored for the second tenant"


async def test_the_same_key_in_two_tenants_gets_a_token_per_tenant(quiet_service):
    """The cache is scoped to the tenant: even the identical secret shares no token across tenants."""
    service = quiet_service
    _, second, key, _ = await _two_tenants_first_registered(service)
    await service.mailboxes.RegisterMailbox(service_account_request(VICTIM, key), metadata=second)
    # (One users.watch: the second registration shares the project's watch, which already covers it.)
    assert _victim_calls(service.sim) == {"oauth2.token": 2, "users.getProfile": 2, "users.watch": 1}


async def test_a_mailbox_of_the_first_tenant_keeps_working(service):
    """After the refused attempts, the legitimate registration still syncs with its own token."""
    first, second, key, mailbox = await _two_tenants_first_registered(service)
    await _refused(service, {**key, "private_key": service.sim.create_service_account_key()["private_key"]}, second)
    stopped = await service.mailboxes.StopMailbox(
        mailbox_service_pb2.StopMailboxRequest(mailbox_id=mailbox.id), metadata=first
    )
    assert stopped.state == STOPPED
    assert _victim_calls(service.sim)["users.stop"] == 1
