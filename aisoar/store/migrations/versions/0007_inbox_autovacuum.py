"""On PostgreSQL, the inbox's dead row versions cleared while a storm goes on.

Each alert's inbox row is written three or four times (stored, claimed, joined to its incident,
kept as evidence). Every write leaves a dead version, and the lookups for pending or held alerts
walk them until a vacuum clears them: under PostgreSQL's default (a vacuum when a fifth of the
table is dead) no vacuum ran during a 60 s storm of 500 alerts/s, its inbox statements read
thousands of buffers a call (14-33 ms each), and the webhooks' answers went from a p50 of 10 ms
at its start to 45-245 ms in its last 10 s. Vacuumed after 2,000 dead rows and 1 % of the
table, the inbox stays as fast as at the storm's start. (How often the autovacuum looks is the server's
``autovacuum_naptime``: deployments/README.md.) SQLite: nothing to do.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The inbox's storage parameters (PostgreSQL's names; RESET gives back the server's defaults).
INBOX_AUTOVACUUM = {
    "autovacuum_vacuum_threshold": "2000",
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_analyze_threshold": "2000",
    "autovacuum_analyze_scale_factor": "0.02",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    settings = ", ".join(f"{name} = {value}" for name, value in INBOX_AUTOVACUUM.items())
    op.execute(f"ALTER TABLE inbox SET ({settings})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER TABLE inbox RESET ({', '.join(INBOX_AUTOVACUUM)})")
