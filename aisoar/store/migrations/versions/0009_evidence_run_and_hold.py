"""Each custody entry names the Prefect run whose step collected the item (so a manifest says
which step of which run it came from), and an incident can be put on legal hold (its evidence
is then never deleted by the retention)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("evidence_items") as batch:
        batch.add_column(sa.Column("flow_run_id", sa.String(64)))
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("legal_hold", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("legal_hold")
    with op.batch_alter_table("evidence_items") as batch:
        batch.drop_column("flow_run_id")
