"""Alembic's environment for the aisoar store: the connection comes from ``Store`` (never
from a config file), so a migration runs on the very database the store opened."""

from __future__ import annotations

from alembic import context

from aisoar.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
