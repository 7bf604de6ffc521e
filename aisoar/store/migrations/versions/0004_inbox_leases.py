"""Concurrent dispatch: an alert being dispatched is leased to one dispatcher (``owner``,
``claimed_at``), and every alert is marked once its payload is in the evidence store."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(sa.Column("owner", sa.String(128)))
        batch.add_column(sa.Column("claimed_at", TS))
        batch.add_column(sa.Column("preserved", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.create_index("ix_inbox_status", ["status"])
        batch.create_index("ix_inbox_incident_preserved", ["incident_id", "preserved"])
    # Before this revision an incident's run preserved all its alerts in its evidence step: an
    # alert of an incident with evidence was kept then. The others (still pending, or whose run
    # has not reached that step) stay unmarked and are preserved like any new alert.
    op.execute(
        sa.text(
            "UPDATE inbox SET preserved = :yes WHERE status = 'dispatched' "
            "AND incident_id IN (SELECT incident_id FROM evidence_items)"
        ).bindparams(yes=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.drop_index("ix_inbox_incident_preserved")
        batch.drop_index("ix_inbox_status")
        batch.drop_column("preserved")
        batch.drop_column("claimed_at")
        batch.drop_column("owner")
