"""submit_multi: the one id a partner's multi-destination submit is answered with.

- ``messages.multi_id``: for each message born of a ``submit_multi`` (one per destination),
  the id the ``submit_multi_resp`` carried — drawn from our id generator like a message id;
  NULL for every other message. Receipts to the partner carry it as their ``id:`` (the partner
  tells the destinations apart by the receipt's source address), and
  ``ix_messages_multi_id`` (partial: most messages have none, and every index costs each
  insert) finds a multi's messages for ``query_sm``/``cancel_sm``.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_WITH_MULTI = sa.text("multi_id IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("multi_id", sa.BigInteger, nullable=True))
    op.create_index(
        "ix_messages_multi_id", "messages", ["multi_id"],
        sqlite_where=_WITH_MULTI, postgresql_where=_WITH_MULTI,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_multi_id", "messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("multi_id")
