"""Fleet-wide gauges on /metrics, read from Postgres at scrape time."""

from __future__ import annotations

import math

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from tests.integration.client.conftest import free_port
from tests.fixtures.rpc import sa_request

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
