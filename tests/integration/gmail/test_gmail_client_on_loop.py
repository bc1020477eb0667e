"""GmailClient's single calls exchanged on the event loop (gmail/transport.py) against the
simulator over real HTTP: no pool thread per call, google-auth's token applied and refreshed
once for all the calls that need it, and a Gmail that cannot be reached is GMAIL_UNAVAILABLE."""

from __future__ import annotations

import asyncio
from typing import Callable

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


class _HeldAnswers:
    """A peer's handler that counts the requests in flight and, while `holding`, answers none
    until three are in, then gives any call past a bound of three time to arrive too;
    `answer(request_line)` is what each request gets."""

    def __init__(self, answer: Callable[[str], bytes], *, holding: bool = True) -> None:
        self.answer = answer
        self.holding = holding
        self.in_flight = 0
        self.most = 0
        self._three_arrived = asyncio.Event()

    async def __call__(self, reader, writer, number) -> None:
        while True:
            line, _, _ = await read_request(reader)
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            if self.holding:
                if self.in_flight >= 3:
                    self._three_arrived.set()
                await self._three_arrived.wait()
                await asyncio.sleep(0.2)  # time for any call past the bound to arrive too
            self.in_flight -= 1
            writer.write(self.answer(line))
            await writer.drain()


def _profile_answer(line: str) -> bytes:
    email = line.split("/users/")[1].split("/")[0] if "/users/" in line else ALICE
    return json_answer({"emailAddress": email, "historyId": "7", "messagesTotal": 0})


def _unavailable_answer(line: str) -> bytes:
    return json_answer({"error": {"code": 503, "message": "Backend Error"}}, status="503 Service Unavailable")


async def test_no_more_exchanges_in_flight_than_the_pool_had_threads(simulator):
    """Calls on the loop are bounded as the pool bounded them (max_workers): nine users' calls
    at once with max_workers=3 put at most three requests on the wire together."""
    emails = [f"user{n}@example.com" for n in range(9)]
    held = _HeldAnswers(_profile_answer)
    for email in emails:
        simulator.create_mailbox(email)
    async with RawPeer(held) as peer:
        gmail = _client(simulator, api_endpoint=peer.url(), max_workers=3)
        try:
            profiles = await asyncio.gather(*(gmail.profile(_credential(simulator, email), email) for email in emails))
        finally:
            gmail.close()
    assert len(profiles) == 9
    assert held.most == 3, held.most


async def test_batches_on_the_pool_count_towards_the_bound(simulator):
    """The bound is on every exchange with Gmail, not only those on the loop: three users'
    batch lookups on the pool's threads and three users' calls on the loop at once, with
    max_workers=3, put at most three requests on the wire together."""
    emails = [f"user{n}@example.com" for n in range(6)]
    held = _HeldAnswers(_unavailable_answer, holding=False)
    for email in emails:
        simulator.create_mailbox(email)
    credentials = {email: _credential(simulator, email) for email in emails}
    async with RawPeer(held) as peer:
        gmail = _client(simulator, api_endpoint=peer.url(), max_workers=3)
        try:
            for email in emails:  # each user's token fetched before: the pool's threads are free for the batches
                with pytest.raises(GmailUnavailable):
                    await gmail.profile(credentials[email], email)
            held.holding, held.most = True, 0
            outcomes = await asyncio.gather(
                *(gmail.message_labels(credentials[email], email, ["a1", "b2"]) for email in emails[:3]),
                *(gmail.profile(credentials[email], email) for email in emails[3:]),
                return_exceptions=True,
            )
        finally:
            gmail.close()
    assert all(isinstance(outcome, GmailUnavailable) for outcome in outcomes), outcomes
    assert held.most == 3, held.most
