"""An index of the alerts not yet kept as evidence: the upkeep asks for them every second, and
without it each ask read the whole inbox (tens of thousands of rows after a storm)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The conditions as the store's schema states them (aisoar/store/schema.py), spelled out here:
# a migration keeps what it did when the schema moves on.
UNPRESERVED_SQLITE = "preserved IS 0 AND incident_id IS NOT NULL"
UNPRESERVED_POSTGRESQL = "preserved IS false AND incident_id IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_inbox_unpreserved",
        "inbox",
        ["received_at"],
        sqlite_where=sa.text(UNPRESERVED_SQLITE),
        postgresql_where=sa.text(UNPRESERVED_POSTGRESQL),
    )


def downgrade() -> None:
    op.drop_index("ix_inbox_unpreserved", table_name="inbox")
