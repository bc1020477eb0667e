"""GmailClient's single calls exchanged on the event loop (gmail/transport.py) against the
simulator over real HTTP: no pool thread per call, google-auth's token applied and refreshed
once for all the calls that need it, and a Gmail that cannot be reached is GMAIL_UNAVAILABLE."""

from __future__ import annotations

import asyncio

import pytest

from mailwatch.config import GmailSettings
from mailwatch.domain.errors import GmailMessageNotFound, GmailUnavailable
from mailwatch.domain.models import ServiceAccountCredential
from mailwatch.gmail.client import GmailClient
from tests.integration.gmail.peers import RawPeer, json_answer, read_request, reset

pytestmark = pytest.mark.integration

ALICE = "alice@example.com"


def _client(simulator, *, api_endpoint: str | None = None, **kwargs) -> GmailClient:
    return GmailClient(GmailSettings(api_endpoint=api_endpoint or simulator.url, token_uri=simulator.token_uri,
                                     calls_per_user=8), **kwargs)


def _credential(simulator, email: str = ALICE) -> ServiceAccountCredential:
    return ServiceAccountCredential(info=simulator.create_service_account_key(), subject=email)


def _token_grants(simulator) -> int:
    return simulator.counters()["methods"].get("oauth2.token", 0)


async def test_a_call_needs_no_pool_thread(simulator):
    """With the client's pool shut down once the token is fetched, history.list, getProfile
    and the lookup of one message's labels are still answered: the pool is only for token
    fetches and batches of two or more."""
    simulator.create_mailbox(ALICE)
    start = simulator.history_id(ALICE)
    message = simulator.insert_message(ALICE, label_ids=["INBOX"])
    credential = _credential(simulator)
    gmail = _client(simulator, max_workers=1)
    try:
        await gmail.profile(credential, ALICE)  # the token is fetched on the pool
        gmail._executor.shutdown(wait=True)
        page = await gmail.history_page(credential, ALICE, start_history_id=start)
        profile = await gmail.profile(credential, ALICE)
        labels = await gmail.message_labels(credential, ALICE, [message["id"]])
        assert page.records and profile.email_address == ALICE
        assert "INBOX" in labels[message["id"]].label_ids
    finally:
        gmail.close()


async def test_a_refused_token_is_refreshed_once_for_the_calls_that_had_it(simulator):
    """Gmail refuses an expired token (401) to every call in flight with it: one token grant
    serves them all, and every call is answered."""
    simulator.create_mailbox(ALICE)
    start = simulator.history_id(ALICE)
    credential = _credential(simulator)
    gmail = _client(simulator, max_workers=8)
    try:
        await gmail.profile(credential, ALICE)
        simulator.advance_clock(3700)  # past the token's hour on the simulator's clock, not google-auth's
        simulator.reset_counters()
        pages = await asyncio.gather(*(gmail.history_page(credential, ALICE, start_history_id=start)
                                       for _ in range(8)))
        assert len(pages) == 8
        assert _token_grants(simulator) == 1
    finally:
        gmail.close()


async def test_gmails_refusal_is_classified_as_before(simulator):
    """An answer >= 300 is google-api-python-client's HttpError, classified as on httplib2."""
    simulator.create_mailbox(ALICE)
    credential = _credential(simulator)
    gmail = _client(simulator)
    try:
        with pytest.raises(GmailMessageNotFound):
            await gmail.get_message(credential, ALICE, "0123456789abcdef", fmt="minimal")
    finally:
        gmail.close()


async def test_a_closed_port_a_silent_server_and_a_reset_are_gmail_unavailable(simulator, unused_tcp_port):
    simulator.create_mailbox(ALICE)
    credential = _credential(simulator)

    async def silent(reader, writer, number):
        await read_request(reader)
        await asyncio.Event().wait()  # never answers

    async def resetting(reader, writer, number):
        await read_request(reader)
        reset(writer)

    async with RawPeer(silent) as quiet, RawPeer(resetting) as rude:
        for endpoint in (f"http://127.0.0.1:{unused_tcp_port}/", quiet.url(), rude.url()):
            gmail = _client(simulator, api_endpoint=endpoint, timeout=1.0)
            try:
                with pytest.raises(GmailUnavailable):
                    await gmail.profile(credential, ALICE)
            finally:
                gmail.close()


async def test_no_more_exchanges_in_flight_than_the_pool_had_threads(simulator):
    """Calls on the loop are bounded as the pool bounded them (max_workers): nine users' calls
    at once with max_workers=3 put at most three requests on the wire together."""
    emails = [f"user{n}@example.com" for n in range(9)]
    in_flight = 0
    most = 0
    three_arrived = asyncio.Event()

    async def serve(reader, writer, number):
        nonlocal in_flight, most
        while True:
            line, headers, _ = await read_request(reader)
            in_flight += 1
            most = max(most, in_flight)
            if in_flight >= 3:
                three_arrived.set()
            await three_arrived.wait()
            await asyncio.sleep(0.2)  # time for any unbounded call to arrive too
            in_flight -= 1
            email = line.split("/users/")[1].split("/")[0] if "/users/" in line else ALICE
            writer.write(json_answer({"emailAddress": email, "historyId": "7", "messagesTotal": 0}))
            await writer.drain()

    for email in emails:
        simulator.create_mailbox(email)
    async with RawPeer(serve) as peer:
        gmail = _client(simulator, api_endpoint=peer.url(), max_workers=3)
        try:
            profiles = await asyncio.gather(*(gmail.profile(_credential(simulator, email), email) for email in emails))
        finally:
            gmail.close()
    assert len(profiles) == 9
    assert most == 3, most
