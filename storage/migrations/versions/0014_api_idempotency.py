"""The HTTPS API's idempotency keys (issue 16: the first answer to a key, returned again).

- ``api_idempotency``: per (account, keyed hash of the client's ``Idempotency-Key``) the
  first final answer: its HTTP status and JSON body with each recipient written as its
  index in the request (no number is stored), the keyed hash of the request body it
  answered, and when. Kept 24 hours; ``ix_api_idempotency_created`` serves their removal.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_idempotency",
        sa.Column("account", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("account", "key_hash"),
    )
    op.create_index("ix_api_idempotency_created", "api_idempotency", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_api_idempotency_created", "api_idempotency")
    op.drop_table("api_idempotency")
