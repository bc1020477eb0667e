"""The service's HTTP side as configured by settings: /metrics, /healthz and Pub/Sub push."""

from __future__ import annotations

import base64
import json

import aiohttp
import pytest

from tests.fixtures.pipeline import collect, message_events
from tests.fixtures.rpc import sa_request

pytestmark = pytest.mark.integration


def push_body(email: str, history_id: int) -> dict:
    data = json.dumps({"emailAddress": email, "historyId": history_id}).encode()
    return {
        "message": {"data": base64.b64encode(data).decode(), "messageId": "1", "attributes": {}},
        "subscription": "projects/p/subscriptions/push",
    }


async def test_push_delivery_feeds_the_pipeline(make_service):
    async with make_service(
        http_listen="127.0.0.1:0", push_enabled=True, push_verify_token=False, pubsub_subscriptions=(),
    ) as service:
        assert service.app.ingestor is None  # push instead of pull
        _, auth = await service.new_tenant()
        sim = service.sim
        await service.mailboxes.RegisterMailbox(sa_request(sim, "pushed@example.com"), metadata=auth)
        message = sim.insert_message("pushed@example.com", label_ids=["INBOX"])
        base = f"http://127.0.0.1:{service.app.http_port}"
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/pubsub/push", json=push_body("pushed@example.com", message["historyId"])) as r:
                assert r.status == 204
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
        events = await collect(service, auth, lambda ev: message["id"] in [e.message_id for e in ev])
        assert message_events(events)[-1][1] == message["id"]


async def test_unwrapped_push_delivery_feeds_the_pipeline_when_configured(make_service):
    async with make_service(
        http_listen="127.0.0.1:0", push_enabled=True, push_verify_token=False, push_accept_unwrapped=True,
        pubsub_subscriptions=(), poll_enabled=False,  # only the push can start the sync
    ) as service:
        _, auth = await service.new_tenant()
        sim = service.sim
        await service.mailboxes.RegisterMailbox(sa_request(sim, "unwrapped@example.com"), metadata=auth)
        message = sim.insert_message("unwrapped@example.com", label_ids=["INBOX"])
        data = {"emailAddress": "unwrapped@example.com", "historyId": message["historyId"]}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{service.app.http_port}/pubsub/push", json=data,
                                 headers={"x-goog-pubsub-message-id": "7"}) as r:
                assert r.status == 204
        events = await collect(service, auth, lambda ev: message["id"] in [e.message_id for e in ev])
        assert message_events(events)[-1][1] == message["id"]


async def test_push_requires_a_token_when_verification_is_on(make_service):
    async with make_service(
        http_listen="127.0.0.1:0", push_enabled=True, push_audience="https://mailwatch.example/push",
        push_service_account_email="push@p.iam.gserviceaccount.com",
        push_certs_url="http://127.0.0.1:9/unused",
    ) as service:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{service.app.http_port}/pubsub/push"
            async with http.post(url, json=push_body("a@example.com", 5)) as r:
                assert r.status == 401
            async with http.post(url, json=push_body("a@example.com", 5), headers={"Authorization": "Bearer x.y.z"}) as r:
                assert r.status in (401, 503)


async def test_metrics_are_exported(make_service):
    async with make_service(http_listen="127.0.0.1:0") as service:
        _, auth = await service.new_tenant()
        await service.mailboxes.RegisterMailbox(sa_request(service.sim, "metered@example.com"), metadata=auth)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{service.app.http_port}/metrics") as r:
                text = await r.text()
        assert r.status == 200
        assert "mailwatch_ingest" in text and "mailwatch_syncs_total" in text
        assert "metered@example.com" not in text
