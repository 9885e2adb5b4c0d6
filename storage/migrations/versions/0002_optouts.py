"""Opt-outs: blacklist, invalid numbers, MO messages, audit log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blacklist",
        sa.Column("scope", sa.String(24), nullable=False),
        sa.Column("dest_hash", sa.LargeBinary(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("confirmed_at", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("scope", "dest_hash"),
    )
    op.create_table(
        "invalid_numbers",
        sa.Column("dest_hash", sa.LargeBinary(16), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_table(
        "mo_messages",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("connector", sa.String(64), nullable=False),
        sa.Column("short_code", sa.String(21), nullable=False),
        sa.Column("source_hash", sa.LargeBinary(16), nullable=True),
        sa.Column("source_enc", sa.LargeBinary, nullable=False),
        sa.Column("text_enc", sa.LargeBinary, nullable=False),
        sa.Column("data_coding", sa.SmallInteger, nullable=False),
        sa.Column("account", sa.String(16), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
    )
    op.create_index("ix_mo_status", "mo_messages", ["status", "received_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(24), nullable=False),
        sa.Column("dest_hash", sa.LargeBinary(16), nullable=True),
        sa.Column("detail", sa.String(256), nullable=False),
    )
    op.create_index("ix_messages_dest", "messages", ["dest_hash", "submitted_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_dest", "messages")
    for table in ("audit_log", "mo_messages", "invalid_numbers", "blacklist"):
        op.drop_table(table)
