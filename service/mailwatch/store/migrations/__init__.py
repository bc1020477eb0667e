"""Alembic migration environment and revisions (a package so wheels ship them)."""
