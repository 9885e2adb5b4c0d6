"""The webhook backlog by message id (a subject's erase and an account's purge).

- ``ix_webhook_message`` (message_id): ``smscenter subject erase`` and ``account purge``
  delete an erased message's backlog rows by ``message_id`` (``storage/subject.py``
  ``erase_messages``); without it each such delete scans the whole backlog, which is
  deepest exactly when a receiver is down.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_webhook_message", "webhook_backlog", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_message", "webhook_backlog")
