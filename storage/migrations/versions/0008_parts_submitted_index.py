"""The parts still waiting for their receipt, indexed on their own.

Housekeeping looks for parts the upstream accepted but never sent a receipt for
(``Store.stale_parts``), every few minutes. ``ix_parts_queue`` (state, next_attempt_at) served
that look-up until 0007 replaced it with the queue's partial index; this partial index holds
only the submitted parts (state 10), so the look-up never reads the settled bulk of the table,
and a part's index entries stay what they were: one while it waits, one while it is out, none
once settled.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_SUBMITTED = sa.text("state = 10")


def upgrade() -> None:
    op.create_index(
        "ix_parts_submitted", "parts", ["message_id"], sqlite_where=_SUBMITTED, postgresql_where=_SUBMITTED,
    )


def downgrade() -> None:
    op.drop_index("ix_parts_submitted", "parts")
