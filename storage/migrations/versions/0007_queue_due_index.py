"""The queue's due order: what the dispatcher loads next, without holding the queue in RAM.

The dispatcher keeps only a bounded working set of due messages in memory and pages through
the rest in ``(next_attempt_at, message_id)`` order (``Store.due_messages``). A partial index
over the waiting parts only (queued, or sending at a crash) makes that page, and "when is the
next one due", a range scan that never touches the parts already submitted or settled — the
bulk of the table. It replaces ``ix_parts_queue`` (state, next_attempt_at), which could
not give that order without a sort: one index per part either way, so storing a message costs
what it did.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_WAITING = sa.text("state IN (0, 1)")


def upgrade() -> None:
    op.drop_index("ix_parts_queue", "parts")
    op.create_index(
        "ix_parts_due", "parts", ["next_attempt_at", "message_id", "part_no"],
        sqlite_where=_WAITING, postgresql_where=_WAITING,
    )


def downgrade() -> None:
    op.drop_index("ix_parts_due", "parts")
    op.create_index("ix_parts_queue", "parts", ["state", "next_attempt_at"])
