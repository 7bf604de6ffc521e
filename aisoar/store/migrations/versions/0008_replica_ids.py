"""The replica ids in use, each with the process that holds it and its last heartbeat: two live
`aisoar serve` under one AISOAR_REPLICA_ID would each take the other's runs and alerts as their
own (both executing one run), so the second is refused when it starts."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replica_ids",
        sa.Column("replica_id", sa.String(200), primary_key=True),
        sa.Column("instance", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("replica_ids")
