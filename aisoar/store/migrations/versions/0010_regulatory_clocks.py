"""The regulatory clocks of each incident: a deadline per regime and duty, counted from the time
of awareness, until a responder records it notified or not applicable."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "regulatory_clocks",
        sa.Column("incident_id", sa.String(40), primary_key=True),
        sa.Column("key", sa.String(40), primary_key=True),
        sa.Column("regime", sa.String(64), nullable=False),
        sa.Column("what", sa.Text, nullable=False),
        sa.Column("why", sa.Text, nullable=False),
        sa.Column("aware_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("reason", sa.Text),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("reminded_at", sa.DateTime(timezone=True)),
        sa.Column("escalated_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_regulatory_clocks_due_at", "regulatory_clocks", ["due_at"])


def downgrade() -> None:
    op.drop_index("ix_regulatory_clocks_due_at", "regulatory_clocks")
    op.drop_table("regulatory_clocks")
