"""Approvals answered by verified identities: who may answer (people), every answer with its
channel and whether it counted, one-time codes (digests only), the Slack message, escalation."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("allowed_json", sa.Text, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("requested_by", sa.String(64)))
        batch.add_column(sa.Column("allow_self", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("flow_run_id", sa.String(40)))
        batch.add_column(sa.Column("opened_at", TS))
        batch.add_column(sa.Column("escalation_level", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("slack_channel", sa.String(32)))
        batch.add_column(sa.Column("slack_ts", sa.String(32)))
        batch.add_column(sa.Column("wake_pending", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "approval_answers",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("approval_id", sa.String(40), nullable=False, index=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("claimed", sa.String(256), nullable=False),
        sa.Column("person", sa.String(64)),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("counted", sa.Boolean, nullable=False),
        sa.Column("refusal", sa.Text),
        sa.Column("dedup_key", sa.String(200), nullable=False),
        sa.UniqueConstraint("approval_id", "dedup_key", name="uq_approval_answer"),
    )
    op.create_table(
        "approval_codes",
        sa.Column("approval_id", sa.String(40), primary_key=True),
        sa.Column("person", sa.String(64), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS),
    )


def downgrade() -> None:
    op.drop_table("approval_codes")
    op.drop_table("approval_answers")
    with op.batch_alter_table("approvals") as batch:
        for column in (
            "wake_pending",
            "slack_ts",
            "slack_channel",
            "escalation_level",
            "opened_at",
            "flow_run_id",
            "allow_self",
            "requested_by",
            "allowed_json",
        ):
            batch.drop_column(column)
