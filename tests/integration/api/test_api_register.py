"""RegisterMailbox / StopMailbox / GetMailbox / ListMailboxes against a real server,
real Postgres, the Pub/Sub emulator and the Gmail simulator."""

from __future__ import annotations

import json

import grpc
import pytest

from mailwatch.v1 import mailbox_service_pb2, resources_pb2
from tests.fixtures.names import TEST_PROJECT
from tests.fixtures.rpc import ACTIVE, STOPPED, error_details, oauth_request, sa_request

pytestmark = pytest.mark.integration


async def test_register_with_service_account_watches_and_stores(service):
    _, auth = await service.new_tenant()
    request = sa_request(service.sim, "alice@example.com", label_ids=["INBOX"])
    mailbox = await service.mailboxes.RegisterMailbox(request, metadata=auth)

    assert mailbox.state == ACTIVE
    assert mailbox.email_address == "alice@example.com"
    assert mailbox.credential_kind == resources_pb2.CREDENTIAL_KIND_SERVICE_ACCOUNT
    assert mailbox.history_id == service.sim.history_id("alice@example.com")
    assert list(mailbox.label_filter.label_ids) == ["INBOX"]
    week = 7 * 24 * 3600
    assert abs(mailbox.watch_expire_time.seconds - (service.sim.now() + week)) < 120
    assert mailbox.next_renew_time.seconds < mailbox.watch_expire_time.seconds
    watch = service.sim.mailbox("alice@example.com")["watch"]
    assert watch["topicName"] == service.topic

    fetched = await service.mailboxes.GetMailbox(
        mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox.id), metadata=auth
    )
    assert (fetched.id, fetched.email_address, fetched.history_id >= mailbox.history_id) == (mailbox.id, mailbox.email_address, True)
    assert fetched.watch_expire_time == mailbox.watch_expire_time


async def test_register_with_oauth_credentials(service):
    _, auth = await service.new_tenant()
    request, _, _ = oauth_request(service.sim, "bob@example.com")
    mailbox = await service.mailboxes.RegisterMailbox(request, metadata=auth)
    assert mailbox.state == ACTIVE
    assert mailbox.credential_kind == resources_pb2.CREDENTIAL_KIND_OAUTH
    assert service.sim.counters()["calls"]["bob@example.com"]["users.watch"] == 1


async def test_register_is_idempotent_and_rewatches_only_on_change(service):
    _, auth = await service.new_tenant()
    request = sa_request(service.sim, "carol@example.com")
    first = await service.mailboxes.RegisterMailbox(request, metadata=auth)
    again = await service.mailboxes.RegisterMailbox(request, metadata=auth)
    assert again.id == first.id
    assert service.sim.counters()["calls"]["carol@example.com"]["users.watch"] == 1

    request.label_ids.append("INBOX")
    changed = await service.mailboxes.RegisterMailbox(request, metadata=auth)
    assert changed.id == first.id
    assert list(changed.label_filter.label_ids) == ["INBOX"]
    assert service.sim.counters()["calls"]["carol@example.com"]["users.watch"] == 2
    assert service.sim.mailbox("carol@example.com")["watch"]["labelIds"] == ["INBOX"]


async def test_include_drafts_is_stored_and_changed_by_registering_again(service):
    """Draft versions are left out unless asked for; registering again (one address, or in a
    batch) with the other choice changes it: the registration is not taken for unchanged."""
    _, auth = await service.new_tenant()
    request = sa_request(service.sim, "drafter@example.com")
    first = await service.mailboxes.RegisterMailbox(request, metadata=auth)
    assert not first.include_drafts
    request.include_drafts = True
    changed = await service.mailboxes.RegisterMailbox(request, metadata=auth)
    assert (changed.id, changed.include_drafts) == (first.id, True)
    fetched = await service.mailboxes.GetMailbox(mailbox_service_pb2.GetMailboxRequest(mailbox_id=first.id), metadata=auth)
    assert fetched.include_drafts
    request.include_drafts = False
    assert not (await service.mailboxes.RegisterMailbox(request, metadata=auth)).include_drafts
    batch = mailbox_service_pb2.BatchRegisterMailboxesRequest(
        email_addresses=["drafter@example.com"], service_account=request.service_account, include_drafts=True)
    batch.service_account.subject = ""
    [result] = (await service.mailboxes.BatchRegisterMailboxes(batch, metadata=auth)).results
    assert (result.status.code, result.mailbox.id, result.mailbox.include_drafts) == (0, first.id, True)
    # Options are set in place: the one watch of the first registration still reports everything.
    assert service.sim.counters()["calls"]["drafter@example.com"]["users.watch"] == 1


async def test_address_case_does_not_create_a_second_mailbox(service):
    _, auth = await service.new_tenant()
    request = sa_request(service.sim, "dave@example.com")
    first = await service.mailboxes.RegisterMailbox(request, metadata=auth)
    request.email_address = "Dave@Example.com"
    second = await service.mailboxes.RegisterMailbox(request, metadata=auth)
    assert second.id == first.id


async def test_stop_is_idempotent_and_ends_the_watch(service):
    _, auth = await service.new_tenant()
    mailbox = await service.mailboxes.RegisterMailbox(sa_request(service.sim, "erin@example.com"), metadata=auth)
    request = mailbox_service_pb2.StopMailboxRequest(mailbox_id=mailbox.id)
    stopped = await service.mailboxes.StopMailbox(request, metadata=auth)
    assert stopped.state == STOPPED
    assert not service.sim.mailbox("erin@example.com").get("watch")
    again = await service.mailboxes.StopMailbox(request, metadata=auth)
    assert again.state == STOPPED
    assert service.sim.counters()["calls"]["erin@example.com"]["users.stop"] == 1

    # Registering again brings it back.
    revived = await service.mailboxes.RegisterMailbox(sa_request(service.sim, "erin@example.com"), metadata=auth)
    assert revived.id == mailbox.id and revived.state == ACTIVE


async def test_list_pages_through_every_mailbox_and_filters_by_state(service):
    _, auth = await service.new_tenant()
    ids = []
    for n in range(5):
        mailbox = await service.mailboxes.RegisterMailbox(sa_request(service.sim, f"user{n}@example.com"), metadata=auth)
        ids.append(mailbox.id)
    await service.mailboxes.StopMailbox(mailbox_service_pb2.StopMailboxRequest(mailbox_id=ids[0]), metadata=auth)

    seen, token, pages = [], "", 0
    while True:
        page = await service.mailboxes.ListMailboxes(
            mailbox_service_pb2.ListMailboxesRequest(page_size=2, page_token=token), metadata=auth
        )
        seen += [m.id for m in page.mailboxes]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == ids and pages == 3

    active = await service.mailboxes.ListMailboxes(
        mailbox_service_pb2.ListMailboxesRequest(states=[ACTIVE]), metadata=auth
    )
    assert [m.id for m in active.mailboxes] == ids[1:]
    stopped = await service.mailboxes.ListMailboxes(
        mailbox_service_pb2.ListMailboxesRequest(states=[STOPPED]), metadata=auth
    )
    assert [m.id for m in stopped.mailboxes] == ids[:1]


async def test_page_token_from_another_query_is_rejected(service):
    _, auth = await service.new_tenant()
    for n in range(3):
        await service.mailboxes.RegisterMailbox(sa_request(service.sim, f"p{n}@example.com"), metadata=auth)
    page = await service.mailboxes.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(page_size=1), metadata=auth)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.mailboxes.ListMailboxes(
            mailbox_service_pb2.ListMailboxesRequest(page_size=1, page_token=page.next_page_token, states=[STOPPED]),
            metadata=auth,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def retry_info(error):
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no RetryInfo")


@pytest.mark.parametrize(
    "fault,code,reason",
    [
        ("rateLimitExceeded", grpc.StatusCode.RESOURCE_EXHAUSTED, "GMAIL_RATE_LIMITED"),
        ("userRateLimitExceeded", grpc.StatusCode.RESOURCE_EXHAUSTED, "GMAIL_RATE_LIMITED"),
        ("backendError", grpc.StatusCode.UNAVAILABLE, "GMAIL_UNAVAILABLE"),
    ],
)
async def test_gmail_failures_map_to_clear_statuses(service, fault, code, reason):
    _, auth = await service.new_tenant()
    request = sa_request(service.sim, "frank@example.com")
    service.sim.inject_fault(fault, method="users.watch", count=1, retry_after=30)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.mailboxes.RegisterMailbox(request, metadata=auth)
    assert caught.value.code() == code
    info, _ = error_details(caught.value)
    assert info.reason == reason and info.domain == "mailwatch.dev"
    if fault != "backendError":
        # Gmail's retry time (named in its message) reaches the caller as RetryInfo.
        retry = retry_info(caught.value)
        assert 20 < retry.retry_delay.seconds <= 30
        service.sim.advance_clock(31)  # past Gmail's lockout of the user
    # Nothing half-registered: the retry succeeds and creates the mailbox.
    mailbox = await service.mailboxes.RegisterMailbox(request, metadata=auth)
    assert mailbox.state == ACTIVE


async def test_revoked_credentials_are_reported_not_internal(service):
    _, auth = await service.new_tenant()
    request, _, _ = oauth_request(service.sim, "gina@example.com")
    service.sim.revoke_user("gina@example.com")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.mailboxes.RegisterMailbox(request, metadata=auth)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(caught.value)[0].reason == "GMAIL_AUTH_FAILED"
    listed = await service.mailboxes.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=auth)
    assert list(listed.mailboxes) == []


async def test_unpublishable_topic_is_reported(service, database_url, gmail_sim, pubsub_topic):
    from tests.fixtures.service import run_service, service_settings

    settings = service_settings(
        database_url, gmail_sim.url, "projects/mailwatch-test/topics/does-not-exist", pubsub_topic["subscription"]
    )
    async with run_service(settings, gmail_sim, settings.pubsub.topic, pubsub_topic["subscription"]) as other:
        _, auth = await other.new_tenant()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await other.mailboxes.RegisterMailbox(sa_request(gmail_sim, "hank@example.com"), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(caught.value)[0].reason == "GMAIL_TOPIC_NOT_PUBLISHABLE"


async def _refused_for_projects(service, request, auth, *, credentials_project: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.mailboxes.RegisterMailbox(request, metadata=auth)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_details(caught.value)[0]
    assert info.reason == "TOPIC_PROJECT_MISMATCH"
    assert (info.metadata["topic_project"], info.metadata["credentials_project"]) == (TEST_PROJECT, credentials_project)
    assert credentials_project in caught.value.details() and TEST_PROJECT in caught.value.details()


async def test_key_from_another_project_is_refused_before_gmail_is_called(service):
    _, auth = await service.new_tenant()
    request = sa_request(service.sim, "kim@example.com")
    key = json.loads(request.service_account.json_key)
    request.service_account.json_key = json.dumps(service.sim.create_service_account_key(project_id="tenant-a"))
    assert key["project_id"] != "tenant-a"
    await _refused_for_projects(service, request, auth, credentials_project="tenant-a")
    assert "users.watch" not in service.sim.counters()["calls"].get("kim@example.com", {})


async def test_gmails_own_project_refusal_maps_to_the_same_outcome(service):
    """An OAuth client does not name its project: Gmail refuses, and says which project it is."""
    _, auth = await service.new_tenant()
    service.sim.create_mailbox("lee@example.com")
    client = service.sim.create_oauth_client(project_id="tenant-b")
    request = mailbox_service_pb2.RegisterMailboxRequest(
        email_address="lee@example.com",
        oauth=mailbox_service_pb2.OAuthCredentials(
            client_id=client["clientId"], client_secret=client["clientSecret"],
            refresh_token=service.sim.issue_refresh_token(client["clientId"], "lee@example.com"),
        ),
    )
    await _refused_for_projects(service, request, auth, credentials_project="tenant-b")
    assert service.sim.counters()["calls"]["lee@example.com"]["users.watch"] == 1


async def test_service_account_without_delegation_for_that_user_is_denied(service):
    """A key whose subject is another user: Gmail answers 403 for the mailbox."""
    _, auth = await service.new_tenant()
    request = sa_request(service.sim, "ivan@example.com")
    service.sim.create_mailbox("judy@example.com")
    request.service_account.subject = "judy@example.com"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.mailboxes.RegisterMailbox(request, metadata=auth)
    assert caught.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION)
    assert error_details(caught.value)[0].reason.startswith("GMAIL_")


async def test_registering_again_recovers_credentials_no_key_can_open(make_service):
    """After the encryption key was lost, registering again replaces what cannot be read."""
    from mailwatch.secrets import generate_key

    async with make_service() as first:
        _, auth = await first.new_tenant("keyloss")
        request = sa_request(first.sim, "lost@example.com")
        mailbox = await first.mailboxes.RegisterMailbox(request, metadata=auth)
    async with make_service(secret_keys=(generate_key(),)) as second:  # the old key is gone
        again = await second.mailboxes.RegisterMailbox(request, metadata=auth)
        assert again.id == mailbox.id and again.state == ACTIVE
        assert second.sim.counters()["calls"]["lost@example.com"]["users.watch"] == 2
