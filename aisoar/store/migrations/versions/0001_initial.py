"""The store as first released: eight tables (the evidence ledger without ``asset``)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "inbox",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("delivery_id", sa.String(64), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("raw_sha256", sa.String(64), nullable=False),
        sa.Column("alert_json", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, default="pending"),
        sa.Column("incident_id", sa.String(40)),
        sa.Column("error", sa.Text),
        sa.UniqueConstraint("source", "delivery_id", name="uq_inbox_delivery"),
    )
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("fingerprint", sa.String(128), nullable=False, index=True),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("type", sa.String(64)),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("correlate_until", TS, nullable=False),
    )
    op.create_table(
        "incident_alerts",
        sa.Column("incident_id", sa.String(40), primary_key=True),
        sa.Column("alert_id", sa.String(40), primary_key=True),
    )
    op.create_table(
        "timeline",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(40), nullable=False, index=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("step_id", sa.String(64)),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data_json", sa.Text, nullable=False, default="{}"),
    )
    op.create_table(
        "playbook_runs",
        sa.Column("incident_id", sa.String(40), primary_key=True),
        sa.Column("playbook", sa.String(64), primary_key=True),
        sa.Column("flow_run_id", sa.String(40), index=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("owner", sa.String(128)),
        sa.Column("heartbeat_at", TS),
        sa.Column("finished", sa.Boolean, nullable=False, default=False),
    )
    op.create_table(
        "step_results",
        sa.Column("incident_id", sa.String(40), primary_key=True),
        sa.Column("playbook", sa.String(64), primary_key=True),
        sa.Column("step_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("output_json", sa.Text, nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("playbook", sa.String(64), nullable=False),
        sa.Column("step_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(128), nullable=False),
        sa.Column("args_sha256", sa.String(64), nullable=False),
        sa.Column("approvers_json", sa.Text, nullable=False),
        sa.Column("quorum", sa.Integer, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("on_timeout", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(256)),
        sa.Column("reason", sa.Text),
        sa.Column("decided_at", TS),
        sa.Column("answers_json", sa.Text, nullable=False, default="{}"),
        sa.UniqueConstraint("incident_id", "playbook", "step_id", name="uq_approval_step"),
    )
    op.create_table(
        "evidence_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(40), nullable=False, index=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("media_type", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("collected_by", sa.String(256), nullable=False),
        sa.Column("collected_at", TS, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False, unique=True),
    )


def downgrade() -> None:
    for table in (
        "evidence_items",
        "approvals",
        "step_results",
        "playbook_runs",
        "timeline",
        "incident_alerts",
        "incidents",
        "inbox",
    ):
        op.drop_table(table)
