"""No change (was: an index on change_events' message ids, for a backfill batch's duplicate check)

This revision built ix_change_events_tenant_id_mailbox_id_message_id for one day's
development; the backfill no longer needs it (see 0021). It does nothing now, so that an
upgrade does not build an index over the whole change log (holding appends to it meanwhile)
only for 0021 to drop it. 0021 drops it where it was built.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 07:20:00
"""

from __future__ import annotations

from typing import Sequence

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
