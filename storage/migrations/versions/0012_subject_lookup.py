"""Data-subject requests: MO looked up by the sender's number.

- ``ix_mo_source``: ``smscenter subject export|erase`` find a number's MO by its keyed hash
  (``mo_messages.source_hash``) without reading the whole table. Messages already have
  ``ix_messages_dest``; opt-outs and invalid numbers are keyed by the hash.

Revision ID: 0012
Revises: 0009 (on its own branch; 0010 and 0011 land with other work: set down_revision to
the last of them when merging)
Create Date: 2026-12-04
"""

from alembic import op

revision = "0012"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_mo_source", "mo_messages", ["source_hash"])


def downgrade() -> None:
    op.drop_index("ix_mo_source", "mo_messages")
