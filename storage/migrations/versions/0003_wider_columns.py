"""Columns wide enough for everything an upstream may legally send.

- ``messages.error`` holds an upstream ``command_status`` on a permanent refusal: a 32-bit
  *unsigned* value, which overflows PostgreSQL's signed INTEGER above 0x7FFFFFFF → BIGINT.
- ``parts.upstream_id`` / ``early_receipts.upstream_id`` hold the *normalised* upstream id:
  a 64-character hex id read as a number is up to 78 decimal digits → VARCHAR(80).

A value that does not fit would fail the whole group commit it is part of (every partner
message in that batch), so these are not cosmetic. SQLite neither enforces VARCHAR lengths
nor has 32-bit integers, so there is nothing to change there (and no table rebuild to pay).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPSTREAM_ID = 80


def _enforces_types() -> bool:
    return op.get_bind().dialect.name != "sqlite"


def upgrade() -> None:
    if not _enforces_types():
        return
    op.alter_column("messages", "error", type_=sa.BigInteger, existing_type=sa.Integer, existing_nullable=False)
    for table in ("parts", "early_receipts"):
        op.alter_column(table, "upstream_id", type_=sa.String(UPSTREAM_ID), existing_type=sa.String(65))


def downgrade() -> None:
    if not _enforces_types():
        return
    for table in ("parts", "early_receipts"):
        op.alter_column(table, "upstream_id", type_=sa.String(65), existing_type=sa.String(UPSTREAM_ID))
    op.alter_column("messages", "error", type_=sa.Integer, existing_type=sa.BigInteger, existing_nullable=False)
