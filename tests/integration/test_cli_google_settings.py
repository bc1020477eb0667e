"""`mailwatch tenants google-settings set|show|clear` against a real database."""

from __future__ import annotations

import json

import pytest

from mailwatch.cli import main
from mailwatch_devstack.gmail_sim import GmailSimulator
from mailwatch.secrets import generate_key
from tests.fixtures.simulator import TestSimulator

pytestmark = pytest.mark.integration


@pytest.fixture
def key_file(tmp_path):
    sim = GmailSimulator()
    url = sim.start(host="127.0.0.1", port=0)
    try:
        key = TestSimulator(url).create_service_account_key(project_id="cli-project")
    finally:
        sim.stop()
    path = tmp_path / "key.json"
    path.write_text(json.dumps(key))
    return path, key


def test_set_show_clear(database_url, key_file, monkeypatch, capsys):
    monkeypatch.setenv("MAILWATCH_DATABASE_URL", database_url)
    monkeypatch.setenv("MAILWATCH_SECRET_KEYS", generate_key())
    path, key = key_file
    assert main(["tenants", "create", "cli-tenant"]) == 0
    assert main(["tenants", "google-settings", "set", "--tenant", "cli-tenant", "--service-account-key", str(path),
                 "--topic", "projects/cli-project/topics/gmail",
                 "--subscription", "projects/cli-project/subscriptions/mailwatch"]) == 0
    assert main(["tenants", "google-settings", "show", "--tenant", "cli-tenant"]) == 0
    out = capsys.readouterr().out
    assert "projects/cli-project/topics/gmail" in out and key["client_email"] in out
    assert key["private_key"].splitlines()[1] not in out

    # A topic outside the key's project is refused with the reason, nothing stored.
    assert main(["tenants", "google-settings", "set", "--tenant", "cli-tenant", "--service-account-key", str(path),
                 "--topic", "projects/other-project/topics/gmail"]) == 1
    assert "cli-project" in capsys.readouterr().err

    assert main(["tenants", "google-settings", "clear", "--tenant", "cli-tenant"]) == 0
    assert main(["tenants", "google-settings", "show", "--tenant", "cli-tenant"]) == 1
    assert "no Google settings" in capsys.readouterr().err
