from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from mailwatch.api import convert, tokens
from mailwatch.domain import models
from mailwatch.streams import EventBatch, Heartbeat
from mailwatch.v1 import admin_service_pb2, resources_pb2

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def mailbox(**overrides) -> models.Mailbox:
    values = dict(
        id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        email_address="alice@example.com",
        state=models.MailboxState.ACTIVE,
        label_filter=models.LabelFilter(("INBOX", "Label_1"), models.LabelFilterBehavior.EXCLUDE),
        credential_kind=models.CredentialKind.OAUTH,
        history_id=1234,
        notified_history_id=1240,
        watch_expiration=T0 + timedelta(days=7),
        next_renewal_at=T0 + timedelta(days=1),
        last_notification_at=T0,
        last_sync_at=T0,
        last_error="quota exceeded",
        last_error_reason="GMAIL_RATE_LIMITED",
        last_error_at=T0 - timedelta(minutes=5),
        next_attempt_at=T0 + timedelta(minutes=15),
        created=T0 - timedelta(days=3),
        updated=T0,
    )
    values.update(overrides)
    return models.Mailbox(**values)


def test_every_domain_enum_member_maps_both_ways():
    for to_proto, from_proto, enum in [
        (convert.MAILBOX_STATE_TO_PROTO, convert.MAILBOX_STATE_FROM_PROTO, models.MailboxState),
        (convert.EVENT_TYPE_TO_PROTO, convert.EVENT_TYPE_FROM_PROTO, models.EventType),
        (convert.LABEL_FILTER_BEHAVIOR_TO_PROTO, convert.LABEL_FILTER_BEHAVIOR_FROM_PROTO, models.LabelFilterBehavior),
        (convert.CREDENTIAL_KIND_TO_PROTO, convert.CREDENTIAL_KIND_FROM_PROTO, models.CredentialKind),
    ]:
        assert set(to_proto) == set(enum)
        assert all(number != 0 for number in to_proto.values())  # never *_UNSPECIFIED
        assert {from_proto[to_proto[member]] for member in enum} == set(enum)


def test_proto_enums_have_no_value_without_a_domain_member():
    assert len(resources_pb2.EventType.values()) == len(models.EventType) + 1
    assert len(resources_pb2.MailboxState.values()) == len(models.MailboxState) + 1


def test_mailbox_to_proto():
    box = mailbox()
    proto = convert.mailbox_to_proto(box)
    assert proto.id == str(box.id)
    assert proto.email_address == "alice@example.com"
    assert proto.state == resources_pb2.MAILBOX_STATE_ACTIVE
    assert list(proto.label_filter.label_ids) == ["INBOX", "Label_1"]
    assert proto.label_filter.behavior == resources_pb2.LABEL_FILTER_BEHAVIOR_EXCLUDE
    assert proto.credential_kind == resources_pb2.CREDENTIAL_KIND_OAUTH
    assert (proto.history_id, proto.notified_history_id) == (1234, 1240)
    assert convert.datetime_from(proto.watch_expire_time) == T0 + timedelta(days=7)
    assert convert.datetime_from(proto.next_renew_time) == T0 + timedelta(days=1)
    assert convert.datetime_from(proto.last_notification_time) == T0
    assert convert.datetime_from(proto.last_sync_time) == T0
    assert (proto.last_error.reason, proto.last_error.message) == ("GMAIL_RATE_LIMITED", "quota exceeded")
    assert convert.datetime_from(proto.last_error.time) == T0 - timedelta(minutes=5)
    assert convert.datetime_from(proto.next_attempt_time) == T0 + timedelta(minutes=15)
    assert convert.datetime_from(proto.create_time) == T0 - timedelta(days=3)
    assert convert.datetime_from(proto.update_time) == T0


def test_mailbox_unset_fields():
    proto = convert.mailbox_to_proto(
        mailbox(
            history_id=None,
            notified_history_id=None,
            watch_expiration=None,
            next_renewal_at=None,
            last_notification_at=None,
            last_sync_at=None,
            last_error=None,
            last_error_reason=None,
            last_error_at=None,
            next_attempt_at=None,
        )
    )
    assert (proto.history_id, proto.notified_history_id) == (0, 0)
    for field in ["watch_expire_time", "next_renew_time", "last_notification_time", "last_sync_time", "last_error",
                  "next_attempt_time"]:
        assert not proto.HasField(field), field


def test_last_error_is_data_not_a_parsed_string():
    proto = convert.mailbox_to_proto(mailbox(last_error="BAD_THING: happened", last_error_reason=None))
    assert (proto.last_error.reason, proto.last_error.message) == ("", "BAD_THING: happened")


def test_naive_datetimes_are_utc():
    assert convert.timestamp(datetime(2024, 1, 1)).ToJsonString() == "2024-01-01T00:00:00Z"
    plus_two = timezone(timedelta(hours=2))
    assert convert.timestamp(datetime(2024, 1, 1, 2, tzinfo=plus_two)).ToJsonString() == "2024-01-01T00:00:00Z"


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 5, 1, 12, 0, 0, 999999, tzinfo=timezone.utc),
        datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=timezone.utc),
        datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=timezone(timedelta(hours=-7))),
        datetime(1970, 1, 1, tzinfo=timezone.utc),
    ],
)
def test_timestamps_are_exact(value):
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(value)
    assert convert.timestamp(value) == expected


def test_a_batch_of_the_same_events_converts_the_same_every_time():
    # Streams share converted events; a second response must not differ from the first.
    events = [
        models.ChangeEvent(
            id=uuid.uuid4(), sequence=n, tenant_id=uuid.uuid4(), mailbox_id=uuid.uuid4(),
            email_address="a@example.com", type=models.EventType.RESYNCED, observed_at=T0,
            detail={"baseline": n},
        )
        for n in (1, 2)
    ]
    (first,) = convert.events_responses(events)
    (second,) = convert.events_responses(events[::-1])
    assert list(second.events) == list(first.events)[::-1]
    assert [dict(e.attributes) for e in first.events] == [{"baseline": "1"}, {"baseline": "2"}]
    first.events[0].message_id = "changed by a consumer of one response"
    assert convert.events_responses(events[:1])[0].events[0].message_id == ""


def test_change_event_to_proto():
    event = models.ChangeEvent(
        id=uuid.uuid4(),
        sequence=77,
        tenant_id=uuid.uuid4(),
        mailbox_id=uuid.uuid4(),
        email_address="alice@example.com",
        type=models.EventType.LABELS_ADDED,
        observed_at=T0,
        history_id=999,
        message_id="m1",
        thread_id="t1",
        label_ids=("STARRED",),
        detail={"reason": "x", "baseline": 12, "nested": {"a": [1, 2]}},
    )
    proto = convert.change_event_to_proto(event)
    assert tokens.decode_cursor(proto.cursor) == 77
    assert proto.type == resources_pb2.EVENT_TYPE_LABELS_ADDED
    assert (proto.id, proto.mailbox_id) == (str(event.id), str(event.mailbox_id))
    assert (proto.history_id, proto.message_id, proto.thread_id) == (999, "m1", "t1")
    assert list(proto.label_ids) == ["STARRED"]
    assert dict(proto.attributes) == {"reason": "x", "baseline": "12", "nested": '{"a": [1, 2]}'}
    assert convert.datetime_from(proto.observe_time) == T0


def test_lifecycle_event_without_message_fields():
    event = models.ChangeEvent(
        id=uuid.uuid4(),
        sequence=1,
        tenant_id=uuid.uuid4(),
        mailbox_id=uuid.uuid4(),
        email_address="a@example.com",
        type=models.EventType.MAILBOX_STOPPED,
        observed_at=T0,
    )
    proto = convert.change_event_to_proto(event)
    assert (proto.history_id, proto.message_id, proto.thread_id, list(proto.label_ids)) == (0, "", "", [])


def test_stream_responses():
    (batch,) = convert.events_responses([])
    assert not batch.HasField("heartbeat") and list(batch.events) == []
    heartbeat = convert.heartbeat_response(T0, 5)
    assert tokens.decode_cursor(heartbeat.heartbeat.cursor) == 5
    assert convert.heartbeat_response(T0, None).heartbeat.cursor == b""


def test_stream_items_to_proto():
    def event(sequence):
        return models.ChangeEvent(
            id=uuid.uuid4(), sequence=sequence, tenant_id=uuid.uuid4(), mailbox_id=uuid.uuid4(),
            email_address="a@example.com", type=models.EventType.MESSAGE_ADDED, observed_at=T0,
            message_id=f"m{sequence}",
        )

    (response,) = convert.stream_responses(EventBatch((event(7), event(9)), position=12))
    assert [tokens.decode_cursor(e.cursor) for e in response.events] == [7, 9]
    (response,) = convert.stream_responses(Heartbeat(server_time=T0, position=12))
    assert response.heartbeat.cursor == tokens.encode_cursor(12)
    assert convert.datetime_from(response.heartbeat.server_time) == T0
    with pytest.raises(TypeError):
        convert.stream_responses(object())


def test_streams_sending_the_same_batch_share_one_response():
    events = tuple(
        models.ChangeEvent(
            id=uuid.uuid4(), sequence=n, tenant_id=uuid.uuid4(), mailbox_id=uuid.uuid4(),
            email_address="a@example.com", type=models.EventType.MESSAGE_ADDED, observed_at=T0,
        )
        for n in (1, 2, 3)
    )
    first = convert.stream_responses(EventBatch(events, position=3, shared=True))
    assert convert.stream_responses(EventBatch(events, position=3, shared=True)) is first
    (subset,) = convert.stream_responses(EventBatch(events[::2], position=3, shared=True))  # another filter's batch
    assert subset is not first[0] and [e.id for e in subset.events] == [str(events[0].id), str(events[2].id)]
    # A stream's own read (a backlog) is nobody else's: not kept.
    own = convert.stream_responses(EventBatch(events, position=3))
    assert own is not first and own[0] is not first[0] and own[0] == first[0]


def _large_event(sequence: int, header_bytes: int) -> models.ChangeEvent:
    """A MESSAGE_ADDED carrying metadata of about `header_bytes` (a long header value)."""
    return models.ChangeEvent(
        id=uuid.uuid4(), sequence=sequence, tenant_id=uuid.uuid4(), mailbox_id=uuid.uuid4(),
        email_address="a@example.com", type=models.EventType.MESSAGE_ADDED, observed_at=T0,
        message_id=f"m{sequence}",
        metadata=models.MessageMetadata(headers=(("Subject", "x" * header_bytes),), snippet="s", size_estimate=1),
    )


def test_a_batch_too_large_for_one_response_is_split_in_order_under_the_limit():
    # 1,000 events of ~20 kB: ~20 MB, far over gRPC's default 4 MiB receive limit in one message.
    events = tuple(_large_event(n, 20_000) for n in range(1, 1001))
    responses = convert.stream_responses(EventBatch(events, position=1000))
    assert len(responses) > 1
    assert all(r.ByteSize() <= convert.MAX_RESPONSE_BYTES for r in responses)
    assert all(len(r.SerializeToString()) <= 4 * 1024 * 1024 for r in responses)
    sent = [tokens.decode_cursor(e.cursor) for r in responses for e in r.events]
    assert sent == list(range(1, 1001))  # every event once, in order, each with its own cursor


def test_a_small_batch_stays_one_response_and_a_huge_event_travels_alone():
    small = tuple(_large_event(n, 100) for n in range(1, 1001))
    assert len(convert.stream_responses(EventBatch(small, position=1000))) == 1
    huge = (_large_event(1, 100), _large_event(2, convert.MAX_RESPONSE_BYTES), _large_event(3, 100))
    responses = convert.stream_responses(EventBatch(huge, position=3))
    assert [[tokens.decode_cursor(e.cursor) for e in r.events] for r in responses] == [[1], [2], [3]]


def test_tenant_and_api_key_to_proto():
    tenant_id = uuid.uuid4()
    key = models.ApiKey(id=uuid.uuid4(), tenant_id=tenant_id, prefix="mwk_abcdefgh", created=T0, revoked_at=None)
    proto = convert.api_key_to_proto(key)
    assert isinstance(proto, admin_service_pb2.ApiKey)
    assert (proto.id, proto.tenant_id, proto.prefix) == (str(key.id), str(tenant_id), "mwk_abcdefgh")
    assert not proto.HasField("revoke_time")
    revoked = convert.api_key_to_proto(models.ApiKey(key.id, tenant_id, "p", T0, revoked_at=T0))
    assert convert.datetime_from(revoked.revoke_time) == T0


@pytest.mark.parametrize("field", ["pruned_through_sequence"])
def test_tenant_to_proto(field):
    kwargs = dict(id=uuid.uuid4(), name="acme", created=T0)
    if field in models.Tenant.__dataclass_fields__:
        kwargs[field] = 0
    proto = convert.tenant_to_proto(models.Tenant(**kwargs))
    assert (proto.id, proto.name) == (str(kwargs["id"]), "acme")
