"""What `mailwatch dev --data-dir` keeps, and that without it nothing is kept."""

from __future__ import annotations

import stat

from mailwatch_devstack.datadir import DevDataDir


def test_the_secret_key_and_demo_api_key_are_kept_private_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv("MAILWATCH_SECRET_KEYS", raising=False)
    first = DevDataDir(tmp_path / "state")
    keys = first.secret_keys()
    assert first.demo_api_key() is None
    first.save_demo_api_key("mwk_demo")

    again = DevDataDir(tmp_path / "state")
    assert again.secret_keys() == keys and again.demo_api_key() == "mwk_demo"
    for name in ("secret-key", "demo.json"):
        assert stat.S_IMODE((tmp_path / "state" / name).stat().st_mode) == 0o600
    assert again.postgres_dir == tmp_path / "state" / "postgres"
    assert again.simulator_file == str(tmp_path / "state" / "gmail-sim.json")


def test_configured_secret_keys_win_all_of_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILWATCH_SECRET_KEYS", "new-key, old-key")
    assert DevDataDir(tmp_path).secret_keys() == ("new-key", "old-key")


def test_without_a_directory_nothing_is_kept(monkeypatch):
    monkeypatch.delenv("MAILWATCH_SECRET_KEYS", raising=False)
    throwaway = DevDataDir(None)
    assert throwaway.secret_keys() != throwaway.secret_keys()  # a new key each time
    throwaway.save_demo_api_key("mwk_demo")
    assert throwaway.demo_api_key() is None
    assert throwaway.postgres_dir is None and throwaway.simulator_file is None
