"""The audit log by time: ``smscenter audit list --since`` reads the newest rows first.

``ix_audit_at`` (at): the listing is ordered by ``at`` and cut by ``--since``; without it
every listing sorts the whole table, and a blacklist import writes one row per number. (The
daemon's follower reads by id, which the primary key already serves.)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_at", "audit_log")
