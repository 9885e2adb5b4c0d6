"""Data-subject requests: MO looked up by the sender's number.

- ``ix_mo_source``: ``smscenter subject export|erase`` find a number's MO by its keyed hash
  (``mo_messages.source_hash``) without reading the whole table. Messages already have
  ``ix_messages_dest``; opt-outs and invalid numbers are keyed by the hash.
- ``ix_outbox_mo`` (partial, rows without a message: the partners' copies of MO): those
  verbs read them to find a number's (decrypting them), without reading the receipts of
  every message in the outbox.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


_NO_MESSAGE = sa.text("message_id IS NULL")


def upgrade() -> None:
    op.create_index("ix_mo_source", "mo_messages", ["source_hash"])
    op.create_index("ix_outbox_mo", "outbox", ["id"], sqlite_where=_NO_MESSAGE, postgresql_where=_NO_MESSAGE)


def downgrade() -> None:
    op.drop_index("ix_outbox_mo", "outbox")
    op.drop_index("ix_mo_source", "mo_messages")
