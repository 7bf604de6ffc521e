"""The store's schema is made by its Alembic migrations, and a store made before them is
brought up to date without losing a row."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from aisoar.store import Store, metadata
from aisoar.store.migrate import MIGRATIONS, _config


def _head() -> str:
    config = _config(None)
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _version(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_the_migrations_make_exactly_the_declared_schema(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'fresh.db'}")
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == [], f"the migrations and aisoar/store/schema.py disagree: {differences}"
    assert _version(store.engine) == _head()
    assert MIGRATIONS.is_dir()


def test_a_store_from_before_migrations_is_upgraded_in_place(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:  # the first layout, as earlier versions created it: no version table
        command.upgrade(_config(connection), "0001")
        connection.execute(sa.text("DROP TABLE alembic_version"))
        connection.execute(
            sa.text(
                "INSERT INTO evidence_items (incident_id, sha256, size, media_type, description, location,"
                " collected_by, collected_at, prev_hash, entry_hash)"
                " VALUES ('INC-1', :h, 3, 'text/plain', 'kept', 'x', 'me', '2026-01-01 00:00:00', :g, :h)"
            ),
            {"h": "a" * 64, "g": "0" * 64},
        )
    engine.dispose()

    store = Store(url)
    columns = {column["name"] for column in sa.inspect(store.engine).get_columns("evidence_items")}
    assert "asset" in columns
    kept = store.evidence_for("INC-1")
    assert [(item.description, item.asset) for item in kept] == [("kept", None)]
    assert _version(store.engine) == _head()
    Store(url)  # opening it again changes nothing
    assert _version(store.engine) == _head()


def test_a_store_already_in_the_newest_layout_is_only_stamped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'current.db'}"
    engine = sa.create_engine(url)
    metadata.create_all(engine)  # what the previous release's create_all made
    engine.dispose()
    store = Store(url)
    assert _version(store.engine) == _head()
