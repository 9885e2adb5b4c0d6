"""Early receipts keep what they say, not the upstream's deliver_sm.

A receipt that arrives before its ``submit_sm_resp`` used to be kept whole (the upstream's
deliver_sm, encrypted: it holds the number). What matching it later needs is its state and
error, read when it arrived: those are kept now (``state``, ``error``), and ``pdu_enc`` is
left empty for new rows — nothing personal is kept for a receipt waiting for its message,
and the event loop no longer encodes every upstream receipt for the rare one kept early.
Rows kept by an earlier version still carry ``pdu_enc`` and are read as before.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("early_receipts") as batch:
        batch.alter_column("pdu_enc", existing_type=sa.LargeBinary, nullable=True)
        batch.add_column(sa.Column("state", sa.SmallInteger, nullable=True))
        batch.add_column(sa.Column("error", sa.BigInteger, nullable=True))


def downgrade() -> None:
    # Rows without their PDU cannot be kept by the older schema.
    op.execute("DELETE FROM early_receipts WHERE pdu_enc IS NULL")
    with op.batch_alter_table("early_receipts") as batch:
        batch.drop_column("error")
        batch.drop_column("state")
        batch.alter_column("pdu_enc", existing_type=sa.LargeBinary, nullable=False)
