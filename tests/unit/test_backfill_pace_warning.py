"""A backfill pace at or above Gmail's per-user 6,000 quota units a minute leaves the mailbox's
live sync nothing (Gmail refuses it with 429 until the minute is over): the sync replica says
so at start-up (workers/backfill.py)."""

from __future__ import annotations

import logging

import pytest

from mailwatch.config import Settings
from mailwatch.workers.backfill import BackfillWorker

ENV = "MAILWATCH_SYNC_BACKFILL_UNITS_PER_MINUTE"


def _start(caplog, **env) -> list[str]:
    settings = Settings.from_env({"MAILWATCH_DATABASE_URL": "postgresql://u@h/db", **env})
    with caplog.at_level(logging.WARNING, logger="mailwatch.workers.backfill"):
        BackfillWorker(settings=settings.sync, sessions=None, gmail=None, secret_box=None)
    return [r.getMessage() for r in caplog.records if r.name == "mailwatch.workers.backfill"]


@pytest.mark.parametrize("pace", ["6000", "15000"])
def test_a_pace_taking_a_users_whole_minute_is_warned_about_at_start_up(caplog, pace):
    [warning] = _start(caplog, **{ENV: pace})
    assert f"{ENV}={pace}" in warning and "6,000" in warning and "429" in warning, warning


def test_the_default_pace_and_one_below_gmails_minute_start_quietly(caplog):
    assert _start(caplog) == []
    assert _start(caplog, **{ENV: "5999"}) == []


def test_a_replica_without_the_sync_worker_does_not_warn(caplog):
    assert _start(caplog, **{ENV: "6000", "MAILWATCH_SYNC_ENABLED": "false"}) == []
