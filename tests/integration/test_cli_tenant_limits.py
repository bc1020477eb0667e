"""`mailwatch tenants limits set|show` against a real database."""

from __future__ import annotations

import pytest

from mailwatch.cli import main

pytestmark = pytest.mark.integration


def test_set_show_and_back_to_the_deployments(database_url, monkeypatch, capsys):
    monkeypatch.setenv("MAILWATCH_DATABASE_URL", database_url)
    monkeypatch.setenv("MAILWATCH_LIMITS_STREAMS_PER_TENANT", "7")
    assert main(["tenants", "create", "cli-limits"]) == 0
    capsys.readouterr()

    assert main(["tenants", "limits", "set", "--tenant", "cli-limits", "--streams", "2",
                 "--registrations-per-minute", "0"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "streams: 2 (own)", "rpcs-per-second: 200 (deployment's)", "registrations-per-minute: no limit (own)"]

    assert main(["tenants", "limits", "set", "--tenant", "cli-limits"]) == 0
    capsys.readouterr()
    assert main(["tenants", "limits", "show", "--tenant", "cli-limits"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "streams: 7 (deployment's)", "rpcs-per-second: 200 (deployment's)", "registrations-per-minute: 6000 (deployment's)"]

    assert main(["tenants", "limits", "show", "--tenant", "nobody"]) == 1
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tenants", "limits", "set", "--tenant", "cli-limits", "--streams", "-1"])
