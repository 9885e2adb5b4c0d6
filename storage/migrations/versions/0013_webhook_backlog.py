"""The webhook subscriber's durable backlog (issue 16: events out of the core).

- ``webhook_backlog``: one row per event owed to an account's ``receipt_url`` / ``mo_url``,
  written in the transaction of the event's cause (a receipt's with the message's final
  state, an MO's with the MO), its JSON payload encrypted with the field cipher, deleted once
  the receiver answered 2xx or once past ``expires_at``.
- ``ix_webhook_due`` (account, next_attempt_at, id): an account's rows due now, soonest
  first; ``ix_webhook_account`` (account, id): its oldest row (ordered delivery) and depth.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_backlog",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("account", sa.String(16), nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("message_id", sa.BigInteger, nullable=True),
        sa.Column("payload_enc", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
    )
    op.create_index("ix_webhook_due", "webhook_backlog", ["account", "next_attempt_at", "id"])
    op.create_index("ix_webhook_account", "webhook_backlog", ["account", "id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_account", "webhook_backlog")
    op.drop_index("ix_webhook_due", "webhook_backlog")
    op.drop_table("webhook_backlog")
