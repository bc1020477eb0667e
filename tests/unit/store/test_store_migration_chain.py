"""The migration files form one line: each revision id once, numbered as its file,
each file's down_revision the one before it. Two engineers landing a migration
at once each number theirs after the head they saw; Alembic then finds two
heads only when a database is migrated (or, with equal ids, silently keeps one
of the two files), so this offline check fails first."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from mailwatch.store.migrate import MIGRATIONS_DIR, alembic_config


def test_migrations_are_one_line_numbered_as_their_files():
    files = sorted(path.name for path in (MIGRATIONS_DIR / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
    numbers = [name[:4] for name in files]
    assert len(set(numbers)) == len(numbers), f"two migration files share a number: {files}"
    assert numbers == [f"{n:04d}" for n in range(1, len(numbers) + 1)], f"numbers skip or repeat: {numbers}"

    script = ScriptDirectory.from_config(alembic_config())
    revisions = {revision.revision: revision for revision in script.walk_revisions()}
    assert sorted(revisions) == numbers, "each file's revision id is its number, and no two files share one"
    assert script.get_heads() == [numbers[-1]]
    for previous, number in zip([None, *numbers], numbers):
        assert revisions[number].down_revision == previous, f"{number} must follow {previous}"
