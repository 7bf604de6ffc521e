"""The aisoar store: inbox, incidents and their timeline, playbook runs and step results,
approvals, the evidence ledger. One facade (``Store``) over one module per aggregate.

SQLAlchemy Core over SQLite (default, WAL) or PostgreSQL. Every method is one short
transaction; callers get pydantic models or plain values back, never rows.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from aisoar.store.approvals import AnswerOutcome, ApprovalAnswer, ApprovalRecord, Approvals
from aisoar.store.clocks import Clock, Clocks
from aisoar.store.evidence import EvidenceLedger, EvidenceRecord, custody_hash
from aisoar.store.inbox import Inbox
from aisoar.store.incidents import Incidents
from aisoar.store.migrate import upgrade
from aisoar.store.replicas import ReplicaHolder, ReplicaIds
from aisoar.store.retention import Retention
from aisoar.store.runs import Runs, StepResult
from aisoar.store.schema import StoreBase, evidence_items, metadata, new_id, sqlite_writers


class Store(Inbox, Incidents, Runs, Approvals, EvidenceLedger, ReplicaIds, Retention, Clocks, StoreBase):
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writers = sqlite_writers(str(path.resolve()))
            # A file on this machine: no connection to go stale, nothing to ping before use.
            # Readers hold a connection without waiting for the writers' lock: a pool as large as
            # PostgreSQL's, so a replica's threads never wait for a connection either.
            self.engine: Engine = sa.create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=20, max_overflow=80
            )

            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()
                dbapi_conn.isolation_level = None  # transactions begin as below, not in the driver

            @sa.event.listens_for(self.engine, "begin")
            def _immediate(conn: sa.Connection) -> None:
                # A transaction that reads and then writes would fail at once with "database is
                # locked" when another writer got in between (SQLite does not wait then); taking
                # the write lock at the start makes concurrent writers wait their turn instead.
                # A read-only transaction (``_read``) begins deferred: it takes no write lock.
                read_only = conn.get_execution_options().get("aisoar_read", False)
                conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
        else:
            # A replica's threads (up to 32 runs, the dispatch workers, the sweep, heartbeats and
            # leases) each hold a connection for a moment: a pool that leaves none waiting.
            self.engine = sa.create_engine(url, pool_size=20, max_overflow=80)
            _ping_when_idle(self.engine, IDLE_PING_SECONDS)
            # ``hold`` keeps a session lock for the length of a call to Slack or Jira: on a
            # connection of its own, outside the pool the store's transactions draw from.
            self._lock_engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        upgrade(self.engine)


IDLE_PING_SECONDS = 5.0


def _ping_when_idle(engine: Engine, seconds: float) -> None:
    """Check a pooled connection before use only when it sat idle for ``seconds`` (a database
    restarted meanwhile): ``pool_pre_ping`` would add a round trip to every transaction, as
    dear as the commit itself in a burst. A connection found dead is replaced (the pool tries
    again with a new one)."""

    @sa.event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < seconds:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise sa.exc.DisconnectionError(f"a pooled connection did not answer: {exc}") from exc
        if not alive:
            raise sa.exc.DisconnectionError("a pooled connection did not answer")


__all__ = [
    "AnswerOutcome",
    "ApprovalAnswer",
    "ApprovalRecord",
    "Clock",
    "EvidenceRecord",
    "ReplicaHolder",
    "StepResult",
    "Store",
    "custody_hash",
    "evidence_items",
    "metadata",
    "new_id",
]
