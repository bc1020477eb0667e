"""Fixtures for the client library's tests against a real, in-process mailwatch."""

from __future__ import annotations

import json

import pytest

from mailwatch_client import ServiceAccountCredentials
from tests.fixtures.names import TEST_PROJECT
from tests.fixtures.service import OPERATOR_TOKEN


def sa_credentials(sim, email: str) -> ServiceAccountCredentials:
    """Creates the mailbox in the simulator and returns delegated service-account credentials for it."""
    sim.create_mailbox(email)
    return ServiceAccountCredentials(json_key=json.dumps(sim.create_service_account_key(project_id=TEST_PROJECT)))


def api_key_of(auth) -> str:
    """The API key in `service.new_tenant()`'s metadata."""
    return dict(auth)["authorization"].removeprefix("Bearer ")


@pytest.fixture
def operator_token() -> str:
    return OPERATOR_TOKEN
