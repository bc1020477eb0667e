"""Which peers the dev stack and the test harness find, and how a test hides the system's."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwatch_devstack.postgres import (
    EMBEDDED_INSTALL,
    PostgresNotFound,
    embedded_bindir,
    find_bindir,
    system_bindir,
)
from mailwatch_devstack.pubsub_emulator import EmulatorNotFound, find_emulator


def test_an_empty_bindir_setting_hides_the_system_postgres_and_falls_back_to_the_embedded_one():
    environ = {"MAILWATCH_PG_BINDIR": "", "PATH": "/usr/bin:/bin"}
    assert system_bindir(environ) is None
    found = find_bindir(environ=environ)
    assert found == embedded_bindir()
    assert found.parent.name == EMBEDDED_INSTALL and (found / "postgres").exists()


def test_a_configured_bindir_wins_and_a_wrong_one_is_an_error(tmp_path):
    (tmp_path / "initdb").touch()
    assert system_bindir({"MAILWATCH_PG_BINDIR": str(tmp_path)}) == tmp_path
    with pytest.raises(PostgresNotFound, match="holds no initdb"):
        system_bindir({"MAILWATCH_PG_BINDIR": str(tmp_path / "missing")})


def test_initdb_on_the_path_is_found_when_nothing_else_is(tmp_path, monkeypatch):
    monkeypatch.setattr("mailwatch_devstack.postgres.DEFAULT_BINDIR", str(tmp_path / "nowhere"))
    (tmp_path / "initdb").touch(mode=0o755)
    assert system_bindir({"PATH": f"/nonexistent:{tmp_path}"}) == tmp_path
    assert system_bindir({"PATH": "/nonexistent"}) is None


def test_embedded_forces_the_wheel_even_with_system_binaries(tmp_path):
    (tmp_path / "initdb").touch()
    assert find_bindir(embedded=True, environ={"MAILWATCH_PG_BINDIR": str(tmp_path)}) == embedded_bindir()


def test_an_empty_emulator_setting_hides_the_emulator():
    assert find_emulator({"MAILWATCH_PUBSUB_EMULATOR": "", "PATH": "/usr/bin:/bin"}) is None


def test_the_emulator_without_java_counts_as_absent(tmp_path):
    launcher = tmp_path / "cloud-pubsub-emulator"
    launcher.touch(mode=0o755)
    java_home = tmp_path / "jdk"
    assert find_emulator({"MAILWATCH_PUBSUB_EMULATOR": str(launcher), "PATH": "/nonexistent"}) is None
    (java_home / "bin").mkdir(parents=True)
    (java_home / "bin" / "java").touch(mode=0o755)
    found = find_emulator({"MAILWATCH_PUBSUB_EMULATOR": str(launcher), "PATH": "/nonexistent",
                           "JAVA_HOME": str(java_home)})
    assert found == str(launcher)
    with pytest.raises(EmulatorNotFound):
        find_emulator({"MAILWATCH_PUBSUB_EMULATOR": str(tmp_path / "missing")})


def test_the_emulator_is_found_on_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr("mailwatch_devstack.pubsub_emulator.DEFAULT_EMULATOR", str(tmp_path / "nowhere"))
    for name in ("cloud-pubsub-emulator", "java"):
        (tmp_path / name).touch(mode=0o755)
    assert Path(find_emulator({"PATH": str(tmp_path)})) == tmp_path / "cloud-pubsub-emulator"
