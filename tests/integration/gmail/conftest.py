"""A Gmail simulator (in this process, one per module, reset per test) for GmailClient's own tests."""

from __future__ import annotations

import pytest

from mailwatch_devstack.gmail_sim import GmailSimulator
from tests.fixtures.simulator import TestSimulator


@pytest.fixture(scope="module")
def _simulator():
    sim = GmailSimulator()
    sim.start(host="127.0.0.1", port=0)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def simulator(_simulator) -> TestSimulator:
    _simulator.reset()
    return TestSimulator(_simulator.url)
