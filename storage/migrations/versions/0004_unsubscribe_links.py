"""Unsubscribe links: the token printed in a message's text.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("unsub_token", sa.String(8), nullable=True))
    op.create_index("ix_messages_unsub_token", "messages", ["unsub_token"])


def downgrade() -> None:
    op.drop_index("ix_messages_unsub_token", "messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("unsub_token")
