"""aisoar at scale runs on PostgreSQL: a real, throwaway cluster (tests/servers/postgres.py)
holds aisoar's store and a Prefect server's database."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from aisoar.models import Alert, Severity
from aisoar.store import Store, new_id
from aisoar.store.migrate import _config
from cli.prefect_auth import credential
from cli.prefect_server import PrefectServer
from sandbox.serving import free_port
from tests.servers.postgres import MAX_CONNECTIONS, USER, Postgres, fresh_database


def _alert(received_at: datetime, delivery: str) -> Alert:
    raw = {"delivery": delivery, "title": "leaked OpenAI key in a public repo"}
    return Alert(
        id=new_id("ALR"),
        source="generic",
        source_id=delivery,
        received_at=received_at,
        title="leaked OpenAI key in a public repo",
        severity=Severity.high,
        raw=raw,
        raw_sha256=hashlib.sha256(repr(raw).encode()).hexdigest(),
        fingerprint=f"leak-{delivery}",
    )


def test_a_cluster_starts_on_loopback_and_stops() -> None:
    pg = Postgres.temporary()
    started = time.monotonic()
    with pg:
        print(f"cluster up in {time.monotonic() - started:.2f}s (pg_ctl start {pg.start_seconds:.2f}s)")
        pg.create_database("one")
        engine = sa.create_engine(pg.url("one"))
        try:
            with engine.connect() as conn:
                row = conn.execute(
                    sa.text(
                        "SELECT current_user, current_database(), inet_server_addr()::text,"
                        " current_setting('max_connections')::int, current_setting('listen_addresses'),"
                        " current_setting('password_encryption')"
                    )
                ).one()
        finally:
            engine.dispose()
        assert tuple(row) == (USER, "one", "127.0.0.1/32", MAX_CONNECTIONS, "127.0.0.1", "scram-sha-256")
        assert pg.url("one", "asyncpg").startswith(f"postgresql+asyncpg://{USER}:")
        # The password is checked: the same URL with another password is refused.
        wrong = sa.create_engine(pg.url("one").replace(pg.password, "not-the-password"))
        with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
            wrong.connect()
        wrong.dispose()
        if os.geteuid() == 0:  # PostgreSQL refuses root: the cluster belongs to nobody
            assert pg.data.stat().st_uid != 0
        assert stat.S_IMODE(pg.data.stat().st_mode) == 0o700
    assert not pg.workdir.exists()  # stopped, and its directory removed
    engine = sa.create_engine(pg.url("one"), connect_args={"connect_timeout": 2})
    with pytest.raises(sa.exc.OperationalError):
        engine.connect()
    engine.dispose()


def test_the_store_migrates_a_fresh_database_and_an_alert_round_trips(postgres: Postgres) -> None:
    url = fresh_database(postgres)
    store = Store(url)
    try:
        assert store.engine.dialect.name == "postgresql"
        with store.engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
        assert revision == ScriptDirectory.from_config(_config(None)).get_current_head()
        with store.engine.connect() as conn:
            options = conn.execute(sa.text("SELECT reloptions FROM pg_class WHERE relname = 'inbox'")).scalar()
        # Vacuumed while a storm goes on (migration 0007): its dead row versions would slow every lookup.
        assert {"autovacuum_vacuum_threshold=2000", "autovacuum_vacuum_scale_factor=0.01"} <= set(options or [])

        now = datetime.now(UTC)
        first, second = _alert(now - timedelta(seconds=2), "d-1"), _alert(now - timedelta(seconds=1), "d-2")
        assert store.accept_alert(first, "d-1") == (first.id, True)
        assert store.accept_alert(first, "d-1") == (first.id, False)  # a repeated delivery is stored once
        assert store.accept_alert(second, "d-2") == (second.id, True)

        assert [a.id for a in store.pending_alerts()] == [first.id, second.id]  # oldest first
        assert store.pending_alerts()[0] == first  # the alert comes back as it went in
        assert [a.id for a in store.pending_alerts(received_before=now - timedelta(seconds=1.5))] == [first.id]

        store.mark_alert(first.id, "dispatched", incident_id="INC-1")
        assert [a.id for a in store.pending_alerts()] == [second.id]
        assert store.alert_status(first.id) == ("dispatched", "INC-1", None)
        assert store.get_alert(first.id) == first
    finally:
        store.engine.dispose()

    reopened = Store(url)  # a second replica opening the same database: nothing left to migrate
    try:
        assert [a.id for a in reopened.pending_alerts()] == [second.id]
    finally:
        reopened.engine.dispose()


@pytest.fixture()
def prefect_on_postgres(postgres: Postgres, tmp_path: Path) -> Iterator[PrefectServer]:
    name = f"prefect_{free_port()}"
    postgres.create_database(name)
    auth = credential(tmp_path / "data").auth_string
    server = PrefectServer(
        tmp_path / "prefect", auth_string=auth, port=free_port(), database_url=postgres.url(name, "asyncpg")
    )
    started = time.monotonic()
    server.start()
    print(f"Prefect server on PostgreSQL up in {time.monotonic() - started:.1f}s")
    yield server
    server.stop()


def test_a_prefect_server_runs_on_postgres(postgres: Postgres, prefect_on_postgres: PrefectServer) -> None:
    server = prefect_on_postgres
    health = httpx.get(f"{server.api_url}/health", headers=server.headers, timeout=10)
    assert health.status_code == 200
    assert httpx.get(f"{server.api_url}/admin/version", timeout=10).status_code == 401  # locked
    with httpx.Client(base_url=server.api_url, headers=server.headers, timeout=30) as client:
        flow = client.post("/flows/", json={"name": "on-postgres"})
        assert flow.status_code == 201, flow.text
    # Its rows are in PostgreSQL (its settings show the URL masked), not in a SQLite file in its home.
    assert not list(server.home.glob("*.db"))
    name = server.database_url.rsplit("/", 1)[1] if server.database_url else ""
    engine = sa.create_engine(postgres.url(name))
    try:
        with engine.connect() as conn:
            names = conn.execute(sa.text("SELECT name FROM flow")).scalars().all()
    finally:
        engine.dispose()
    assert names == ["on-postgres"]


def test_a_pooled_connection_killed_while_idle_is_replaced_not_an_error(postgres: Postgres) -> None:
    """A database restarted (or a connection cut) while the pool sat idle: the next transaction
    finds its connection dead, checks it (only connections idle for IDLE_PING_SECONDS are
    checked: a check on every checkout costs a round trip per transaction) and uses a new one."""
    from aisoar.store import IDLE_PING_SECONDS

    url = fresh_database(postgres)
    store = Store(url)
    store.add_timeline("INC-IDLE", "run", "before")
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    admin.dispose()
    assert killed and killed >= 1
    time.sleep(IDLE_PING_SECONDS + 0.3)
    store.add_timeline("INC-IDLE", "run", "after")  # no error: the dead connection was replaced
    with store.engine.connect() as conn:
        messages = conn.execute(sa.text("SELECT message FROM timeline WHERE incident_id = 'INC-IDLE' ORDER BY seq"))
        assert [row.message for row in messages] == ["before", "after"]
    store.engine.dispose()


def test_an_approval_opened_by_two_runners_at_once_is_one_record(postgres: Postgres) -> None:
    """On PostgreSQL two transactions both found no record and both inserted one: the second
    failed the run with a unique violation (seen when a run was taken over from a replica still
    running it). Both now get the one record; one of them made it."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    store = Store(fresh_database(postgres))
    try:
        for attempt in range(10):
            ready = Barrier(2)

            def open_it(_: int, attempt: int = attempt, ready: Barrier = ready) -> tuple[str, bool]:
                ready.wait()
                record, created = store.open_approval(
                    f"INC-{attempt}",
                    "pb",
                    "delete",
                    "openai.delete_project_key",
                    "0" * 64,
                    ["alice"],
                    ["alice"],
                    1,
                    timedelta(hours=1),
                    "reject",
                )
                return record.id, created

            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(open_it, range(2)))
            assert answers[0][0] == answers[1][0], answers
            assert sorted(created for _, created in answers) == [False, True], answers
    finally:
        store.engine.dispose()
