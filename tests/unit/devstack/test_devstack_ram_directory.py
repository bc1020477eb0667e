"""Where a throwaway Postgres cluster lives: the tests put theirs in RAM when the machine has room."""

from __future__ import annotations

import os
import shutil
from collections import namedtuple

from mailwatch_devstack import postgres
from mailwatch_devstack.postgres import TemporaryPostgres, ram_directory

Usage = namedtuple("Usage", "total used free")


def test_a_writable_ram_directory_with_room_is_chosen(tmp_path, monkeypatch):
    monkeypatch.setattr(postgres, "RAM_DIRECTORY", tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(8 << 30, 0, 8 << 30))
    assert ram_directory() == tmp_path


def test_no_ram_directory_when_it_is_missing_full_or_read_only(tmp_path, monkeypatch):
    monkeypatch.setattr(postgres, "RAM_DIRECTORY", tmp_path / "missing")
    assert ram_directory() is None

    monkeypatch.setattr(postgres, "RAM_DIRECTORY", tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(8 << 30, 7 << 30, 1 << 30))
    assert ram_directory(min_free_bytes=2 << 30) is None

    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(8 << 30, 0, 8 << 30))
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert ram_directory() is None


def test_a_throwaway_cluster_is_made_in_the_parent_it_is_given(tmp_path):
    server = TemporaryPostgres(parent=tmp_path)
    try:
        assert server.datadir.parent.parent == tmp_path
        assert server.datadir.parent.name.startswith("mailwatch-pg-")
    finally:
        server.stop()  # never started: removes its directory
    assert list(tmp_path.iterdir()) == []
