"""The custody chain per incident: entries appended from now on are chained to the previous
entry of their incident (``chain = 'incident'``), so the evidence of different incidents is
recorded side by side instead of in turn; the entries before this revision keep the chain
they were written in, the store's one chain (``chain`` null), and are verified as it."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("evidence_items") as batch:
        batch.add_column(sa.Column("chain", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("evidence_items") as batch:
        batch.drop_column("chain")
