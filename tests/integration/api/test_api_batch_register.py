"""BatchRegisterMailboxes: many addresses, one service account, one answer per address."""

from __future__ import annotations

import json

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from sqlalchemy import text

from mailwatch.v1 import mailbox_service_pb2
from tests.fixtures.rpc import ACTIVE, STOPPED, error_details, status_detail, tenant_topic
from tests.integration.api.test_api_google_settings import set_sa_settings

pytestmark = pytest.mark.integration


def _batch(key: dict, addresses: list[str], **fields) -> mailbox_service_pb2.BatchRegisterMailboxesRequest:
    return mailbox_service_pb2.BatchRegisterMailboxesRequest(
        email_addresses=addresses,
        service_account=mailbox_service_pb2.ServiceAccountCredentials(json_key=json.dumps(key)),
        **fields,
    )


async def _domain(service, prefix: str, count: int):
    """A new tenant, `count` Gmail users in the simulator and one service account key for them."""
    _, auth = await service.new_tenant()
    addresses = [f"{prefix}{i}@domain.test" for i in range(count)]
    for address in addresses:
        service.sim.create_mailbox(address)
    return auth, addresses, service.sim.create_service_account_key()


async def test_each_address_is_answered_on_its_own(service):
    auth, good, key = await _domain(service, "user", 5)
    requested = [good[0], "not an address", good[1], "User0@Domain.test", "nobody@domain.test", *good[2:]]

    response = await service.mailboxes.BatchRegisterMailboxes(_batch(key, requested, label_ids=["INBOX"]), metadata=auth)

    results = list(response.results)
    assert [r.email_address for r in results] == requested
    by_address = dict(zip(requested, results))
    for address in good:
        result = by_address[address]
        assert result.status.code == code_pb2.OK, result.status
        assert result.mailbox.state == ACTIVE and result.mailbox.email_address == address
        assert list(result.mailbox.label_filter.label_ids) == ["INBOX"]
        assert service.sim.mailbox(address)["watch"]["topicName"] == service.topic
        fetched = await service.mailboxes.GetMailbox(
            mailbox_service_pb2.GetMailboxRequest(mailbox_id=result.mailbox.id), metadata=auth
        )
        assert fetched.email_address == address

    malformed = by_address["not an address"].status
    assert malformed.code == code_pb2.INVALID_ARGUMENT
    violations = status_detail(malformed, error_details_pb2.BadRequest).field_violations
    assert [v.field for v in violations] == ["email_addresses[1]"]

    duplicate = by_address["User0@Domain.test"].status
    assert duplicate.code == code_pb2.INVALID_ARGUMENT
    assert "duplicate of email_addresses[0]" in status_detail(duplicate, error_details_pb2.BadRequest).field_violations[0].description

    # Gmail refuses an address it does not know: that address alone fails, with Gmail's reason.
    unknown = by_address["nobody@domain.test"].status
    assert unknown.code not in (code_pb2.OK, code_pb2.INTERNAL, code_pb2.UNKNOWN)
    assert status_detail(unknown, error_details_pb2.ErrorInfo).reason.startswith("GMAIL_")
    assert not results[1].HasField("mailbox") and not by_address["nobody@domain.test"].HasField("mailbox")

    listed = await service.mailboxes.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=auth)
    assert sorted(m.email_address for m in listed.mailboxes) == sorted(good)


async def test_the_same_batch_again_changes_nothing(service):
    auth, addresses, key = await _domain(service, "again", 3)
    first = await service.mailboxes.BatchRegisterMailboxes(_batch(key, addresses), metadata=auth)
    second = await service.mailboxes.BatchRegisterMailboxes(_batch(key, addresses), metadata=auth)
    assert [r.mailbox.id for r in second.results] == [r.mailbox.id for r in first.results]
    calls = service.sim.counters()["calls"]
    # Per address: one token grant (its own subject), shared by getProfile and
    # users.watch; the second batch asked Gmail nothing.
    assert all(calls[address] == {"oauth2.token": 1, "users.getProfile": 1, "users.watch": 1}
               for address in addresses), calls


async def _watch_started(service, tenant_id: str) -> dict[str, list[dict]]:
    """The tenant's WATCH_STARTED events' details by address, in log order."""
    async with service.app.sessions() as session:
        rows = await session.execute(text(
            "SELECT email_address, detail FROM change_events WHERE tenant_id = :tenant AND event_type = 'WATCH_STARTED' "
            "ORDER BY sequence"), {"tenant": tenant_id})
        found: dict[str, list[dict]] = {}
        for address, detail in rows:
            found.setdefault(address, []).append(detail)
        return found


async def test_a_batch_mixing_unchanged_stopped_and_new_addresses_treats_each_as_registering_it_alone(service):
    tenant_id, auth = await service.new_tenant()
    addresses = [f"mix{i}@domain.test" for i in range(3)]
    for address in addresses:
        service.sim.create_mailbox(address)
    key = service.sim.create_service_account_key()
    first = await service.mailboxes.BatchRegisterMailboxes(_batch(key, addresses[:2]), metadata=auth)
    stopped = await service.mailboxes.StopMailbox(
        mailbox_service_pb2.StopMailboxRequest(mailbox_id=first.results[1].mailbox.id), metadata=auth)
    assert stopped.state == STOPPED

    again = await service.mailboxes.BatchRegisterMailboxes(_batch(key, addresses), metadata=auth)

    assert [r.status.code for r in again.results] == [code_pb2.OK] * 3
    assert [r.mailbox.id for r in again.results[:2]] == [r.mailbox.id for r in first.results]
    assert all(r.mailbox.state == ACTIVE for r in again.results)
    calls = service.sim.counters()["calls"]
    # Unchanged: no second watch. Stopped: watched again. New: watched once.
    assert [calls[address]["users.watch"] for address in addresses] == [1, 2, 1]
    events = await _watch_started(service, tenant_id)
    assert [(d["registration"], d["previous_state"]) for d in events[addresses[0]]] == [("created", "")]
    assert [(d["registration"], d["previous_state"]) for d in events[addresses[1]]] == [
        ("created", ""), ("updated", "STOPPED")]
    assert [(d["registration"], d["previous_state"]) for d in events[addresses[2]]] == [("created", "")]


async def test_a_batch_is_written_at_once_its_events_contiguous_in_request_order(service):
    """One transaction for the batch: a stream sees its WATCH_STARTED events
    together, in the order the addresses were asked for (with a transaction
    per address they came in the order Gmail answered, mixed with others')."""
    tenant_id, auth = await service.new_tenant()
    addresses = [f"order{i}@domain.test" for i in (7, 2, 9, 0, 5, 1, 8, 3)]
    for address in addresses:
        service.sim.create_mailbox(address)
    response = await service.mailboxes.BatchRegisterMailboxes(
        _batch(service.sim.create_service_account_key(), addresses), metadata=auth)
    assert [r.status.code for r in response.results] == [code_pb2.OK] * len(addresses)
    async with service.app.sessions() as session:
        rows = (await session.execute(text(
            "SELECT sequence, email_address FROM change_events WHERE tenant_id = :tenant "
            "AND event_type = 'WATCH_STARTED' ORDER BY sequence"), {"tenant": tenant_id})).all()
    assert [address for _, address in rows] == addresses
    sequences = [sequence for sequence, _ in rows]
    assert sequences == list(range(sequences[0], sequences[0] + len(addresses)))


async def test_a_row_that_cannot_be_written_fails_only_its_own_address(service):
    """The batch is written in one transaction; when that fails, each row is
    written on its own, so the others are registered (row and event) and only
    the address whose row Postgres refuses fails."""
    tenant_id, auth = await service.new_tenant()
    addresses = [f"row{i}@domain.test" for i in range(3)]
    for address in addresses:
        service.sim.create_mailbox(address)
    async with service.app.sessions() as session, session.begin():
        # A real refusal by Postgres for one address (this test's database only).
        await session.execute(text(
            "CREATE FUNCTION refuse_row1() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"))
        await session.execute(text(
            "CREATE TRIGGER refuse_row1 BEFORE INSERT ON mailboxes FOR EACH ROW "
            "WHEN (NEW.email_address = 'row1@domain.test') EXECUTE FUNCTION refuse_row1()"))

    response = await service.mailboxes.BatchRegisterMailboxes(
        _batch(service.sim.create_service_account_key(), addresses), metadata=auth)

    codes = [r.status.code for r in response.results]
    assert codes[0] == codes[2] == code_pb2.OK and codes[1] != code_pb2.OK
    assert not response.results[1].HasField("mailbox")
    listed = await service.mailboxes.ListMailboxes(mailbox_service_pb2.ListMailboxesRequest(), metadata=auth)
    assert sorted(m.email_address for m in listed.mailboxes) == [addresses[0], addresses[2]]
    events = await _watch_started(service, tenant_id)
    assert sorted(events) == [addresses[0], addresses[2]] and all(len(e) == 1 for e in events.values())


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.ClearField("email_addresses"), "email_addresses"),
        (lambda r: r.email_addresses.extend(f"u{i}@domain.test" for i in range(1001)), "email_addresses"),
        (lambda r: setattr(r.service_account, "subject", "admin@domain.test"), "service_account.subject"),
        (lambda r: setattr(r.service_account, "json_key", "{}"), "service_account.json_key"),
        (lambda r: r.label_ids.append(""), "label_ids[0]"),
    ],
)
async def test_a_bad_shared_part_fails_the_call(service, change, field):
    _, auth = await service.new_tenant()
    request = _batch(service.sim.create_service_account_key(), ["ok@domain.test"])
    change(request)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await service.mailboxes.BatchRegisterMailboxes(request, metadata=auth)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    _, bad_request = error_details(raised.value)
    assert field in [v.field for v in bad_request.field_violations]


async def test_without_a_key_each_address_uses_the_tenants_default_service_account(service):
    tenant_id, auth = await service.new_tenant()
    names = tenant_topic("batch-proj")
    await set_sa_settings(service, tenant_id, "batch-proj", names)
    addresses = [f"dflt{i}@domain.test" for i in range(3)]
    for address in addresses:
        service.sim.create_mailbox(address)
    request = mailbox_service_pb2.BatchRegisterMailboxesRequest(email_addresses=addresses)
    response = await service.mailboxes.BatchRegisterMailboxes(request, metadata=auth)
    assert [r.status.code for r in response.results] == [code_pb2.OK] * 3
    for address, result in zip(addresses, response.results):
        assert result.mailbox.watch_topic == names["topic"]
        assert service.sim.mailbox(address)["watch"]["topicName"] == names["topic"]


async def test_without_a_key_or_tenant_defaults_each_address_says_so(service):
    _, auth = await service.new_tenant()
    request = mailbox_service_pb2.BatchRegisterMailboxesRequest(email_addresses=["a@domain.test", "b@domain.test"])
    response = await service.mailboxes.BatchRegisterMailboxes(request, metadata=auth)
    assert [r.status.code for r in response.results] == [code_pb2.FAILED_PRECONDITION] * 2
    assert all(status_detail(r.status, error_details_pb2.ErrorInfo).reason for r in response.results)
