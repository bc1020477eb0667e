"""The tests' own layout: every folder of tests is a package, and a test file in
an area's folder is named test_<area>_<thing>.py (the area being the folder's
name, or its singular: tests/integration/streams/test_stream_wakeups.py), so a
file's name alone says what it tests and no two test modules share a name."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
#: Folders directly under tests/ (and tests/ itself) hold tests of every area.
KINDS = {"unit", "integration", "e2e", "deploy"}


def test_every_folder_with_python_files_is_a_package():
    missing = sorted(
        str(folder.relative_to(TESTS))
        for folder in {path.parent for path in TESTS.rglob("*.py")}
        if not (folder / "__init__.py").exists()
    )
    assert not missing, f"test folders without __init__.py: {missing}"


def test_test_files_are_named_after_their_area():
    misnamed = []
    for path in TESTS.rglob("test_*.py"):
        area = path.parent.name
        if path.parent == TESTS or area in KINDS:
            continue
        stems = {area, area.removesuffix("s")}
        thing = path.stem.removeprefix("test_")
        if not any(thing == stem or thing.startswith(f"{stem}_") for stem in stems):
            misnamed.append(str(path.relative_to(TESTS)))
    assert not misnamed, f"name these test_<area>_<thing>.py after their folder: {sorted(misnamed)}"
