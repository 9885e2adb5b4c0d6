"""Retention: the purge's indexes, the billing aggregates and the jobs' last runs.

- ``messages.dest_country``: the destination's ISO region, written at submit, so billing can
  keep the country once the number is purged (older rows: derived at purge, decrypting).
- ``ix_messages_done_at``: the purge takes ended messages oldest first, a range scan.
- ``ix_outbox_message`` (partial, rows with a message): a message's receipts go with it.
- ``billing_days``: counts per account, day, country, category, sender and final state.
- ``jobs``: when the retention purge last ran (a restart knows whether it is overdue).

MO rows, outbox rows without a message and early receipts need no new index: ids are
time-ordered (``storage/ids.py``), so "older than" is also a primary-key range.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_WITH_MESSAGE = sa.text("message_id IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("dest_country", sa.String(2), nullable=True))
    op.create_index("ix_messages_done_at", "messages", ["done_at"])
    op.create_index(
        "ix_outbox_message", "outbox", ["message_id"],
        sqlite_where=_WITH_MESSAGE, postgresql_where=_WITH_MESSAGE,
    )
    op.create_table(
        "billing_days",
        sa.Column("account", sa.String(16), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("category", sa.String(10), nullable=False),
        sa.Column("sender", sa.String(21), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("messages", sa.BigInteger, nullable=False),
        sa.Column("segments", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account", "day", "country", "category", "sender", "state"),
    )
    op.create_table(
        "jobs",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("last_run_at", sa.Float, nullable=False),
        sa.Column("detail", sa.String(512), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("billing_days")
    op.drop_index("ix_outbox_message", "outbox")
    op.drop_index("ix_messages_done_at", "messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("dest_country")
