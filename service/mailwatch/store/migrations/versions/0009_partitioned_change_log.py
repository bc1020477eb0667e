"""change_events partitioned by observed_at (a partition per UTC day, and a default one)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 02:15:00

Retention then drops whole expired days (store/partitions.py) instead of
deleting rows one by one, which at ~50 M changes a day is the only way to keep
up. The existing table is not copied: it is attached as the first partition,
covering everything up to the end of the current UTC day (MINVALUE .. next
midnight); the prune worker drops it once that day has expired, like any other
day. Attaching builds the new unique indexes on it (they must include the
partition key) and checks its rows against a CHECK constraint validated first,
so the rows are read, never rewritten. An empty table is simply replaced.

Days from tomorrow on get partitions of their own (the worker keeps creating
them ahead); `change_events_default` catches a row outside every partition
(an observed time far in the past or future), so an insert never fails for
want of a partition.
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Partitions created ahead of today by the migration (the worker keeps at least as many).
DAYS_AHEAD = 3

_CONSTRAINTS = """
    ALTER TABLE change_events
        ADD CONSTRAINT pk_change_events PRIMARY KEY (sequence, observed_at),
        ADD CONSTRAINT uq_change_events_id_observed_at UNIQUE (id, observed_at),
        ADD CONSTRAINT fk_change_events_tenant_id_tenants FOREIGN KEY (tenant_id)
            REFERENCES tenants (id) ON DELETE CASCADE
"""


def _day_partition(day_sql: str) -> str:
    """CREATE TABLE for the partition of the UTC day starting at `day_sql` (a timestamptz expression)."""
    return f"""
    DO $$
    DECLARE lower timestamptz := {day_sql};
    BEGIN
        -- A day the default partition already holds rows of is left to the prune worker,
        -- which moves them (store/partitions.py).
        IF EXISTS (SELECT FROM change_events_default
                   WHERE observed_at >= lower AND observed_at < lower + interval '1 day') THEN
            RETURN;
        END IF;
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF change_events FOR VALUES FROM (%L) TO (%L)',
            'change_events_p' || to_char(lower AT TIME ZONE 'UTC', 'YYYYMMDD'), lower, lower + interval '1 day');
    END $$
    """


def _rename_identity_sequence(table: str) -> None:
    """Name the identity's sequence after its (renamed) table, freeing the old name."""
    op.execute(f"""
        DO $$ BEGIN
            EXECUTE format('ALTER SEQUENCE %s RENAME TO %I',
                           pg_get_serial_sequence('{table}', 'sequence'), '{table}_sequence_seq');
        END $$
    """)


def upgrade() -> None:
    bind = op.get_bind()
    # The old table and the names its index-backed constraints hold (index names are schema-wide).
    op.execute("ALTER TABLE change_events RENAME TO change_events_legacy")
    _rename_identity_sequence("change_events_legacy")
    op.execute("ALTER TABLE change_events_legacy RENAME CONSTRAINT pk_change_events TO change_events_legacy_pkey")
    op.execute("ALTER TABLE change_events_legacy RENAME CONSTRAINT uq_change_events_id TO change_events_legacy_id_key")
    op.execute("ALTER TABLE change_events_legacy RENAME CONSTRAINT fk_change_events_tenant_id_tenants "
               "TO change_events_legacy_tenant_id_fkey")
    op.execute("ALTER INDEX ix_change_events_tenant_id_sequence RENAME TO change_events_legacy_tenant_id_sequence_idx")
    op.execute("ALTER INDEX ix_change_events_observed_at RENAME TO change_events_legacy_observed_at_idx")

    # Same columns, defaults and NOT NULLs; a fresh identity continuing after the old one.
    op.execute("CREATE TABLE change_events (LIKE change_events_legacy INCLUDING DEFAULTS INCLUDING IDENTITY) "
               "PARTITION BY RANGE (observed_at)")
    # The default partition exists before anything is attached or created: nothing can miss a partition.
    op.execute("CREATE TABLE change_events_default PARTITION OF change_events DEFAULT")
    next_sequence = bind.execute(sa.text(
        "SELECT coalesce(max(sequence), 0) + 1 FROM change_events_legacy")).scalar_one()
    last_drawn = bind.execute(sa.text(
        "SELECT last_value FROM change_events_legacy_sequence_seq")).scalar_one()
    op.execute(f"ALTER TABLE change_events ALTER COLUMN sequence RESTART WITH {max(next_sequence, last_drawn + 1)}")
    op.execute(_CONSTRAINTS)
    op.create_index("ix_change_events_tenant_id_sequence", "change_events", ["tenant_id", "sequence"])
    op.create_index("ix_change_events_observed_at", "change_events", ["observed_at"])

    tomorrow = "date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day'"
    populated = bind.execute(sa.text("SELECT EXISTS (SELECT FROM change_events_legacy)")).scalar_one()
    if populated:
        # Rows observed after today (a skewed clock) move to the default partition first.
        op.execute(f"""
            WITH moved AS (DELETE FROM change_events_legacy WHERE observed_at >= {tomorrow} RETURNING *)
            INSERT INTO change_events_default SELECT * FROM moved
        """)
        # The old table keeps no identity, constraints or indexes the parent brings its own of
        # (its (tenant_id, sequence) and observed_at indexes match the parent's and are adopted).
        op.execute("ALTER TABLE change_events_legacy ALTER COLUMN sequence DROP IDENTITY")
        op.execute("ALTER TABLE change_events_legacy DROP CONSTRAINT change_events_legacy_pkey, "
                   "DROP CONSTRAINT change_events_legacy_id_key, DROP CONSTRAINT change_events_legacy_tenant_id_fkey")
        # A validated CHECK lets ATTACH skip its own scan under the stronger lock.
        op.execute(f"ALTER TABLE change_events_legacy ADD CONSTRAINT change_events_legacy_range "
                   f"CHECK (observed_at < {tomorrow})")
        op.execute(f"""
            DO $$ BEGIN
                EXECUTE format('ALTER TABLE change_events ATTACH PARTITION change_events_legacy '
                               'FOR VALUES FROM (MINVALUE) TO (%L)', {tomorrow});
            END $$
        """)
        op.execute("ALTER TABLE change_events_legacy DROP CONSTRAINT change_events_legacy_range")
    else:
        op.execute("DROP TABLE change_events_legacy")
        op.execute(_day_partition("date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"))
    for ahead in range(1, DAYS_AHEAD + 1):
        op.execute(_day_partition(f"{tomorrow} + interval '{ahead - 1} days'"))


def downgrade() -> None:
    # Back to one plain table: the rows of every partition are copied into it.
    op.execute("ALTER TABLE change_events RENAME TO change_events_partitioned")
    _rename_identity_sequence("change_events_partitioned")
    op.execute("ALTER TABLE change_events_partitioned RENAME CONSTRAINT pk_change_events TO change_events_partitioned_pkey")
    op.execute("ALTER TABLE change_events_partitioned RENAME CONSTRAINT uq_change_events_id_observed_at "
               "TO change_events_partitioned_id_key")
    op.execute("ALTER INDEX ix_change_events_tenant_id_sequence RENAME TO change_events_partitioned_tenant_id_sequence_idx")
    op.execute("ALTER INDEX ix_change_events_observed_at RENAME TO change_events_partitioned_observed_at_idx")
    op.execute("CREATE TABLE change_events (LIKE change_events_partitioned INCLUDING DEFAULTS INCLUDING IDENTITY)")
    op.execute("INSERT INTO change_events SELECT * FROM change_events_partitioned")
    next_sequence = op.get_bind().execute(sa.text(
        "SELECT coalesce(max(sequence), 0) + 1 FROM change_events")).scalar_one()
    op.execute(f"ALTER TABLE change_events ALTER COLUMN sequence RESTART WITH {next_sequence}")
    op.execute("DROP TABLE change_events_partitioned")
    op.execute("""
        ALTER TABLE change_events
            ADD CONSTRAINT pk_change_events PRIMARY KEY (sequence),
            ADD CONSTRAINT uq_change_events_id UNIQUE (id),
            ADD CONSTRAINT fk_change_events_tenant_id_tenants FOREIGN KEY (tenant_id)
                REFERENCES tenants (id) ON DELETE CASCADE
    """)
    op.create_index("ix_change_events_tenant_id_sequence", "change_events", ["tenant_id", "sequence"])
    op.create_index("ix_change_events_observed_at", "change_events", ["observed_at"])
