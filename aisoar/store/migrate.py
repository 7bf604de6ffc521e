"""Schema changes of the store are Alembic migrations (``aisoar/store/migrations/versions``),
applied when a store is opened. A store created before migrations existed (tables, no
``alembic_version``) is first stamped with the revision its tables match."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(connection: sa.Connection | None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _unversioned_revision(connection: sa.Connection) -> str | None:
    """The revision an unversioned store's tables match; None for an empty database."""
    inspector = sa.inspect(connection)
    tables = set(inspector.get_table_names())
    if "alembic_version" in tables or "incidents" not in tables:
        return None
    columns = {column["name"] for column in inspector.get_columns("evidence_items")}
    if "regulatory_clocks" in tables:
        return "0010"
    if "flow_run_id" in columns:
        return "0009"
    if "replica_ids" in tables:
        return "0008"
    if "ix_inbox_unpreserved" in {index["name"] for index in inspector.get_indexes("inbox")}:
        return "0006"
    if "chain" in columns:
        return "0005"
    if "preserved" in {column["name"] for column in inspector.get_columns("inbox")}:
        return "0004"
    if "approval_codes" in tables:
        return "0003"
    return "0002" if "asset" in columns else "0001"


def upgrade(engine: Engine) -> None:
    """Bring the store's schema to the newest revision."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Replicas starting together migrate one after the other (the others then find
            # nothing to do); PostgreSQL's DDL is transactional, the lock ends with it.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(7243501877)"))
        config = _config(connection)
        found = _unversioned_revision(connection)
        if found is not None:
            command.stamp(config, found)
        command.upgrade(config, "head")
