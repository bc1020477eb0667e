"""Store fixtures on top of the suite's `database_url` (a fresh database cloned
from a template that `mailwatch migrate` built once)."""

from __future__ import annotations

import pytest


@pytest.fixture
def migrated_url(database_url):
    return database_url

