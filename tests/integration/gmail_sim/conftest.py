"""Fixtures for the Gmail simulator conformance suite.

One simulator per module (started once, `reset()` before each test) keeps the
suite fast; tests that need Pub/Sub use `pubsub_sim`, bound to the session's
emulator. Clients are built with the unmodified google-api-python-client and
google-auth, and closed after each test.
"""

from __future__ import annotations

import pytest

from mailwatch_devstack.gmail_sim import GmailSimulator, SimulatorControl
from tests.integration.gmail_sim.support import Gmail


def _running(pubsub_emulator_host: str | None):
    sim = GmailSimulator(pubsub_emulator_host=pubsub_emulator_host)
    sim.start(host="127.0.0.1", port=0)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def _plain_sim():
    yield from _running(None)


@pytest.fixture
def sim(_plain_sim):
    _plain_sim.reset()
    return _plain_sim


@pytest.fixture
def control(sim):
    return SimulatorControl(sim.url)


@pytest.fixture(scope="module")
def _pubsub_sim(pubsub_emulator):
    yield from _running(pubsub_emulator.host)


@pytest.fixture
def pubsub_sim(_pubsub_sim):
    _pubsub_sim.reset()
    return _pubsub_sim


@pytest.fixture
def gmail(sim, control):
    helper = Gmail(sim.url, control)
    try:
        yield helper
    finally:
        helper.close()


@pytest.fixture
def pubsub_gmail(pubsub_sim, pubsub_names):
    helper = Gmail(pubsub_sim.url, SimulatorControl(pubsub_sim.url), project=pubsub_names["project"])
    try:
        yield helper
    finally:
        helper.close()
