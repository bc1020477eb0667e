"""Fleet-wide gauges on /metrics, read from Postgres at scrape time: mailboxes, and each tenant's
streams as its limit counts them (all replicas' unexpired leases)."""

from __future__ import annotations

import math
import uuid

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from mailwatch.store import stream_leases
from mailwatch.v1 import mailbox_service_pb2
from mailwatch_devstack.ports import free_port
from tests.fixtures.rpc import sa_request
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration


async def scrape(service) -> dict[tuple[str, tuple], float]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{service.app.http_port}/metrics") as response:
            assert response.status == 200
            body = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


async def test_fleet_gauges_follow_the_database(make_service):
    # Workers off: nothing but this test changes the mailboxes between scrapes.
    async with make_service(
        http_listen="127.0.0.1:0", sync_enabled=False, poll_enabled=False, renew_enabled=False,
    ) as service:
        _, auth = await service.new_tenant()
        for email in ("a@example.com", "b@example.com", "c@example.com"):
            await service.mailboxes.RegisterMailbox(sa_request(service.sim, email), metadata=auth)
        async with service.app.sessions() as session:
            await session.execute(text(
                "UPDATE mailboxes SET state = 'AUTH_FAILED', sync_due_at = NULL WHERE email_address = 'c@example.com'"
            ))
            await session.execute(text(
                "UPDATE mailboxes SET sync_due_at = now() - interval '10 minutes', "
                "watch_expiration = now() + interval '2 hours' WHERE email_address = 'a@example.com'"
            ))
            await session.execute(text(
                "UPDATE mailboxes SET sync_due_at = NULL WHERE email_address = 'b@example.com'"
            ))
            await session.commit()

        metrics = await scrape(service)
        assert metrics[("mailwatch_mailboxes", (("state", "ACTIVE"),))] == 2
        assert metrics[("mailwatch_mailboxes", (("state", "AUTH_FAILED"),))] == 1
        assert metrics[("mailwatch_mailboxes", (("state", "STOPPED"),))] == 0
        assert metrics[("mailwatch_sync_due_mailboxes", ())] == 1
        assert 600 <= metrics[("mailwatch_sync_oldest_due_age_seconds", ())] < 3600
        assert 0 < metrics[("mailwatch_watch_soonest_expiry_seconds", ())] <= 2 * 3600
        assert metrics[("mailwatch_fleet_metrics_stale", ())] == 0


async def test_fleet_gauges_with_no_mailboxes(make_service):
    async with make_service(http_listen="127.0.0.1:0") as service:
        metrics = await scrape(service)
        assert metrics[("mailwatch_mailboxes", (("state", "ACTIVE"),))] == 0
        assert metrics[("mailwatch_sync_due_mailboxes", ())] == 0
        assert metrics[("mailwatch_sync_oldest_due_age_seconds", ())] == 0
        assert math.isinf(metrics[("mailwatch_watch_soonest_expiry_seconds", ())])


async def test_an_unreachable_database_marks_the_gauges_stale_and_the_scrape_still_answers():
    from prometheus_client import REGISTRY

    from mailwatch.clock import SystemClock
    from mailwatch.fleet_metrics import FleetMetrics
    from mailwatch.store import create_engine, session_factory

    # Nothing listens there: connecting fails at once, as with a database that went away.
    engine = create_engine(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/gone")
    try:
        await FleetMetrics(session_factory(engine), SystemClock()).refresh()
    finally:
        await engine.dispose()
    assert REGISTRY.get_sample_value("mailwatch_fleet_metrics_stale") == 1


async def test_each_tenants_streams_are_counted_for_every_replica_as_its_limit_counts_them(make_service):
    async with make_service(http_listen="127.0.0.1:0") as service:
        busy_id, auth = await service.new_tenant()
        idle_id, _ = await service.new_tenant()
        busy = uuid.UUID(busy_id)
        stream = service.mailboxes.StreamChanges(mailbox_service_pb2.StreamChangesRequest(), metadata=auth)
        try:
            await eventually(lambda: service.app.usage_limits.open_streams(busy) == 1, what="the stream open")
            # Another replica's stream of the same tenant, and a lapsed lease (a dead replica's) that no
            # longer counts.
            assert await stream_leases.open_lease(service.app.sessions, busy, uuid.uuid4(), 0, 30.0)
            assert await stream_leases.open_lease(service.app.sessions, busy, uuid.uuid4(), 0, -1.0)

            metrics = await scrape(service)
            assert metrics[("mailwatch_tenant_stream_leases", (("tenant", busy_id),))] == 2
            assert metrics[("mailwatch_tenant_stream_leases", (("tenant", idle_id),))] == 0
            assert metrics[("mailwatch_tenant_streams_open", (("tenant", busy_id),))] == 1  # this replica's
        finally:
            stream.cancel()
