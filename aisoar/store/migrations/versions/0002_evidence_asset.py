"""Evidence is tagged with the asset it is about (``<system>:<kind>:<id>``)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("evidence_items") as batch:
        batch.add_column(sa.Column("asset", sa.String(256)))
        batch.create_index("ix_evidence_items_asset", ["asset"])


def downgrade() -> None:
    with op.batch_alter_table("evidence_items") as batch:
        batch.drop_index("ix_evidence_items_asset")
        batch.drop_column("asset")
