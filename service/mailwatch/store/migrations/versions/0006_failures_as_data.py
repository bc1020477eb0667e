"""failures as data: reason, message and next attempt in columns; Gmail's retry time; ACCESS_REFUSED

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 09:30:00

- `last_error_reason`: the failure's stable reason. Workers used to write
  "REASON: message" into `last_error`; existing rows are split here and
  `last_error` keeps the message only.
- `next_attempt_at`: when the failed sync or renewal is tried again.
- `gmail_retry_at`: the retry time Gmail named in a rate-limit answer; no
  Gmail call is made for the mailbox before it.
- state `ACCESS_REFUSED`: Gmail refused access for good (delegation denied,
  domainPolicy, insufficientPermissions, mail service not enabled).
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATES_BEFORE = ("ACTIVE", "AUTH_FAILED", "STOPPED")
_STATES_AFTER = (*_STATES_BEFORE, "ACCESS_REFUSED")
_PREFIXED = r"^([A-Z][A-Z0-9_]{1,61}[A-Z0-9]): (.*)$"


def _state_check(states) -> str:
    return "state IN (" + ", ".join(f"'{s}'" for s in states) + ")"


def upgrade() -> None:
    op.add_column("mailboxes", sa.Column("last_error_reason", sa.Text(), nullable=True))
    op.add_column("mailboxes", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("mailboxes", sa.Column("gmail_retry_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        sa.text(
            "UPDATE mailboxes SET last_error_reason = substring(last_error FROM :pattern), "
            "last_error = regexp_replace(last_error, :pattern, '\\2', 's') "
            "WHERE last_error ~ :pattern"
        ).bindparams(pattern=_PREFIXED)
    )
    op.drop_constraint(op.f("ck_mailboxes_state_valid"), "mailboxes", type_="check")
    op.create_check_constraint(op.f("ck_mailboxes_state_valid"), "mailboxes", _state_check(_STATES_AFTER))


def downgrade() -> None:
    op.execute("UPDATE mailboxes SET state = 'AUTH_FAILED' WHERE state = 'ACCESS_REFUSED'")
    op.drop_constraint(op.f("ck_mailboxes_state_valid"), "mailboxes", type_="check")
    op.create_check_constraint(op.f("ck_mailboxes_state_valid"), "mailboxes", _state_check(_STATES_BEFORE))
    op.execute(
        "UPDATE mailboxes SET last_error = last_error_reason || ': ' || last_error "
        "WHERE last_error_reason IS NOT NULL AND last_error IS NOT NULL"
    )
    op.drop_column("mailboxes", "gmail_retry_at")
    op.drop_column("mailboxes", "next_attempt_at")
    op.drop_column("mailboxes", "last_error_reason")
