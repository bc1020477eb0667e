"""Malformed Pub/Sub messages and push requests, fuzzed against the real ingest paths.

Whatever arrives, ingest must acknowledge it after keeping it (a message that
can never succeed must not be redelivered for ever), count it, stay up, and
still turn the next real notification into a sync. Push is fuzzed over HTTP
against the service's own endpoint; pull through the Pub/Sub emulator into
the service's subscription.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwatch.v1 import mailbox_service_pb2
from tests.fixtures.factory import register_sa_mailbox
from tests.fixtures.waiting import eventually, eventually_sync

pytestmark = [
    pytest.mark.integration,
    # See test_fuzz_rpcs: the live service uses the global `random` concurrently.
    pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"),
]

FUZZ = settings(
    max_examples=int(os.environ.get("MAILWATCH_FUZZ_EXAMPLES", "60")),
    deadline=None,
    # The same examples on every run unless MAILWATCH_FUZZ_RANDOM=1 asks for fresh ones
    # (with MAILWATCH_FUZZ_EXAMPLES for more): the suite gates every landing, so what it
    # explores must not change from run to run; deeper random runs are for developers.
    derandomize=os.environ.get("MAILWATCH_FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

# JSON values of every shape, with strings Postgres text and JSONB refuse (NUL, lone surrogates) included.
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40), st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff", "😀", "9" * 30, "-1", "0"]),
)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=10), inner, max_size=3), max_leaves=8)
addresses = st.one_of(
    st.emails().map(str), st.text(max_size=40), st.sampled_from(["a\x00@b.c", "a\ud800@b.c", "A@B.C", "@", ""]),
)
history_ids = st.one_of(
    st.integers(-(2**70), 2**70).map(str), st.integers(-(2**70), 2**70), json_values, st.sampled_from(["", "1e3", "0x10", " 5"]),
)
# What Gmail could plausibly have published, bent: right keys, wrong values, extra keys.
notification_like = st.fixed_dictionaries(
    {}, optional={"emailAddress": addresses, "historyId": history_ids, "extra": json_values}
).map(lambda d: json.dumps(d).encode())
message_datas = st.one_of(st.binary(max_size=200), notification_like, json_values.map(lambda v: json.dumps(v).encode()))
hostile_text = st.text(max_size=40) | st.sampled_from(["\x00", "a\x00b", "\ud800"])
attribute_maps = st.dictionaries(hostile_text, hostile_text, max_size=4)
# Pub/Sub itself only carries valid UTF-8 attributes with non-empty keys, and a
# message needs data or an attribute; within that, anything.
pubsub_attribute_maps = st.dictionaries(
    st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=20),
    st.text(max_size=40) | st.sampled_from(["\x00", "a\x00b"]), max_size=4,
)
pubsub_datas = st.one_of(st.binary(min_size=1, max_size=200), notification_like, json_values.map(lambda v: json.dumps(v).encode()))


def _b64(data: bytes, urlsafe: bool) -> str:
    return (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()


push_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(
        lambda data, urlsafe, message_id, attributes, data_override, extra: json.dumps({
            "message": {
                "data": data_override if data_override is not None else _b64(data, urlsafe),
                "messageId": message_id, "attributes": attributes, **extra,
            },
            "subscription": "projects/p/subscriptions/push",
        }).encode(),
        message_datas, st.booleans(), json_values, attribute_maps | json_values,
        st.none() | json_values, st.dictionaries(st.text(max_size=8), json_values, max_size=2),
    ),
)


async def _synced_past(service, auth, mailbox_id: str, history_id: int, timeout: float = 60.0) -> None:
    """Until the mailbox has synced up to `history_id`: the real notification got through."""

    async def synced() -> bool:
        request = mailbox_service_pb2.GetMailboxRequest(mailbox_id=mailbox_id)
        got = await service.mailboxes.GetMailbox(request, metadata=auth)
        return got.history_id >= history_id

    await eventually(synced, timeout=timeout, what=f"mailbox synced to history {history_id}")


@pytest.mark.timeout(600)
async def test_fuzzed_push_requests_are_acknowledged_and_kept(make_service):
    async with make_service(
        http_listen="127.0.0.1:0", push_enabled=True, push_verify_token=False, pubsub_subscriptions=(),
        poll_interval_seconds=3600.0,  # only the pushed notification may sync the mailbox
    ) as service:
        auth, mailbox = await register_sa_mailbox(service, "pushed@example.com")
        url = f"http://127.0.0.1:{service.app.http_port}/pubsub/push"
        statuses: dict[int, int] = {}

        def fuzz() -> None:
            with requests.Session() as http:

                @FUZZ
                @given(body=push_bodies)
                def post(body):
                    response = http.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    # 204 is Pub/Sub's ack: anything else is redelivered, for ever for a message that cannot change.
                    assert response.status_code == 204, (body[:300], response.status_code, response.text[:200])

                post()

        await asyncio.to_thread(fuzz)
        assert statuses.get(204, 0) >= 1

        message = service.sim.insert_message("pushed@example.com", label_ids=["INBOX"])
        data = json.dumps({"emailAddress": "pushed@example.com", "historyId": str(message["historyId"])}).encode()
        envelope = {"message": {"data": base64.b64encode(data).decode(), "messageId": "real-1"}, "subscription": "s"}
        response = await asyncio.to_thread(requests.post, url, json=envelope, timeout=60)
        assert response.status_code == 204
        await _synced_past(service, auth, mailbox.id, int(message["historyId"]))
        health = await asyncio.to_thread(requests.get, url.replace("/pubsub/push", "/healthz"), timeout=60)
        assert health.status_code == 200


@pytest.mark.timeout(600)
async def test_fuzzed_pubsub_messages_are_acknowledged_counted_and_kept(make_service):
    from google.cloud import pubsub_v1

    async with make_service(poll_interval_seconds=3600.0) as service:
        auth, mailbox = await register_sa_mailbox(service, "pulled@example.com")
        ingestor = service.app.ingestor
        assert ingestor is not None
        publisher = pubsub_v1.PublisherClient()
        published = {"count": 0}

        def fuzz() -> None:
            def wait_for(condition) -> None:
                """Until `condition()` holds (60 s at most), with no failed write meanwhile."""

                def met() -> bool:
                    assert ingestor.stats.write_failures == 0, ingestor.status()
                    return condition()

                try:
                    eventually_sync(met, timeout=60, what="ingest settled")
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; {ingestor.status()}") from None

            @settings(FUZZ, max_examples=max(5, FUZZ.max_examples // 6))
            @given(batch=st.lists(st.tuples(pubsub_datas, pubsub_attribute_maps), min_size=1, max_size=20))
            def publish(batch):
                stats = ingestor.stats
                # Start from a settled ingestor: a message counted but not yet acknowledged
                # (the registration's own watch notification, in flight) would otherwise be
                # taken for one of ours by the acknowledgement count below.
                wait_for(lambda: stats.acked + stats.nacked >= stats.received)
                before, counted_before = stats.acked, stats.malformed + stats.unknown + stats.accepted + stats.inactive
                publisher.api.publish(request={"topic": service.topic, "messages": [
                    {"data": data, "attributes": attributes} for data, attributes in batch
                ]})
                published["count"] += len(batch)
                # Every message acknowledged (none left to be redelivered) and the loop still pulling.
                wait_for(lambda: stats.acked >= before + len(batch))
                # ... and each one counted as what it is (malformed, or a notification for an unknown mailbox).
                assert stats.malformed + stats.unknown + stats.accepted + stats.inactive >= counted_before + len(batch)

            publish()

        try:
            await asyncio.to_thread(fuzz)
            assert ingestor.stats.write_failures == 0
            assert ingestor.stats.acked >= published["count"]

            # The real notification Gmail sends after a change still gets through
            # (published here: the simulator's own may fall under Gmail's 1/s/user drop).
            message = service.sim.insert_message("pulled@example.com", label_ids=["INBOX"])
            data = json.dumps({"emailAddress": "pulled@example.com", "historyId": str(message["historyId"])})
            publisher.api.publish(request={"topic": service.topic, "messages": [{"data": data.encode()}]})
        finally:
            publisher.api.transport.close()
        await _synced_past(service, auth, mailbox.id, int(message["historyId"]))
