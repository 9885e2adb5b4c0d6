"""The connection log: every bind attempt on the partner listener (issue 15, item 4).

- ``connection_log``: time, system_id as sent, account (when the system_id is one), peer IP
  and port, bind type, TLS or not, the status answered (NULL: the peer hung up first). No
  password, ever.
- ``ix_connection_log_at``: the retention purge (``connections``, 12 months) and ``--since``
  read by age; ``ix_connection_log_account``: an account's connections, newest first
  (``connections list --account``, ``smscenter accounts``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connection_log",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("system_id", sa.String(16), nullable=False),
        sa.Column("account", sa.String(16), nullable=True),
        sa.Column("peer_ip", sa.String(45), nullable=False),
        sa.Column("peer_port", sa.Integer, nullable=False),
        sa.Column("bind_type", sa.String(12), nullable=False),
        sa.Column("tls", sa.Boolean, nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
    )
    op.create_index("ix_connection_log_at", "connection_log", ["at"])
    op.create_index("ix_connection_log_account", "connection_log", ["account", "at"])


def downgrade() -> None:
    op.drop_index("ix_connection_log_account", "connection_log")
    op.drop_index("ix_connection_log_at", "connection_log")
    op.drop_table("connection_log")
