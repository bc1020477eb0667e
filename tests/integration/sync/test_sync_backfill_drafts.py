"""A backfill shows drafts as the registration's live stream does: left out (and counted as
skipped) unless the registration includes drafts (`include_drafts`, false by default).

Real peers: the service in process, the Gmail simulator behind google-api-python-client,
the Python client library.
"""

from __future__ import annotations

import pytest

from mailwatch_client import AsyncMailwatchClient, BackfillRequest, EventType
from tests.integration.client.conftest import api_key_of, sa_credentials
from tests.integration.sync.test_sync_backfill import _collect_until, _completed

pytestmark = pytest.mark.integration

EXISTING = EventType.Value("EVENT_TYPE_MESSAGE_EXISTING")


@pytest.fixture
async def service(make_service):
    async with make_service(sync_backfill_units_per_minute=10_000_000) as running:
        yield running


@pytest.mark.parametrize("include_drafts", [False, True], ids=["drafts_left_out", "drafts_included"])
async def test_a_backfill_delivers_a_draft_only_to_a_registration_that_includes_drafts(service, include_drafts):
    sim = service.sim
    _, auth = await service.new_tenant()
    address = f"drafts-{str(include_drafts).lower()}@example.com"
    credentials = sa_credentials(sim, address)
    mail = sim.insert_message(address, label_ids=["INBOX"])["id"]
    draft = sim.save_draft(address)["id"]
    async with AsyncMailwatchClient(service.target, api_key_of(auth)) as client:
        mailbox = await client.register_mailbox(address, credentials=credentials, include_drafts=include_drafts,
                                                backfill=BackfillRequest(newest=10))
        events = await _collect_until(client, _completed, timeout=90)
        done = (await client.get_mailbox(mailbox.id)).backfill

    existing = [(e.message_id, "DRAFT" in e.label_ids) for e in events if e.type == EXISTING]
    if include_drafts:
        assert existing == [(mail, False), (draft, True)]
        assert (done.listed_count, done.delivered_count, done.skipped_count) == (2, 2, 0)
    else:
        assert existing == [(mail, False)]
        assert (done.listed_count, done.delivered_count, done.skipped_count) == (2, 1, 1)
