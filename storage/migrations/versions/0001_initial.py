"""Initial schema: messages, parts (the MT queue), outbox, early receipts, meta.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("account", sa.String(16), nullable=False),
        sa.Column("category", sa.String(10), nullable=False),
        sa.Column("source_addr", sa.String(21), nullable=False),
        sa.Column("source_ton", sa.SmallInteger, nullable=False),
        sa.Column("source_npi", sa.SmallInteger, nullable=False),
        sa.Column("dest_hash", sa.LargeBinary(16), nullable=False),
        sa.Column("dest_enc", sa.LargeBinary, nullable=False),
        sa.Column("data_coding", sa.SmallInteger, nullable=False),
        sa.Column("registered_delivery", sa.SmallInteger, nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("parts_total", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("error", sa.Integer, nullable=False),
        sa.Column("submitted_at", sa.Float, nullable=False),
        sa.Column("not_before", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("done_at", sa.Float, nullable=True),
        sa.Column("connector", sa.String(64), nullable=True),
    )
    op.create_index("ix_messages_submitted_at", "messages", ["submitted_at"])
    op.create_index("ix_messages_account_dest", "messages", ["account", "dest_hash"])
    op.create_table(
        "parts",
        sa.Column("message_id", sa.BigInteger, nullable=False),
        sa.Column("part_no", sa.SmallInteger, nullable=False),
        sa.Column("pdu_enc", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("connector", sa.String(64), nullable=True),
        sa.Column("upstream_id", sa.String(65), nullable=True),
        sa.Column("attempts", sa.SmallInteger, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("message_id", "part_no"),
    )
    op.create_index("ix_parts_upstream", "parts", ["connector", "upstream_id"])
    op.create_index("ix_parts_queue", "parts", ["state", "next_attempt_at"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("account", sa.String(16), nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("message_id", sa.BigInteger, nullable=True),
        sa.Column("pdu_enc", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
    )
    op.create_index("ix_outbox_account", "outbox", ["account", "id"])
    op.create_table(
        "early_receipts",
        sa.Column("connector", sa.String(64), nullable=False),
        sa.Column("upstream_id", sa.String(65), nullable=False),
        sa.Column("pdu_enc", sa.LargeBinary, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("connector", "upstream_id"),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )


def downgrade() -> None:
    for table in ("meta", "early_receipts", "outbox", "parts", "messages"):
        op.drop_table(table)
