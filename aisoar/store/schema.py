"""The store's tables (SQLAlchemy Core), and the helpers every aggregate shares."""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from aisoar.models import utcnow

metadata = sa.MetaData()

_ts = sa.DateTime(timezone=True)

# As ``unpreserved_alerts`` asks (SQLite uses a partial index only for the terms it names).
UNPRESERVED_SQLITE = "preserved IS 0 AND incident_id IS NOT NULL"
UNPRESERVED_POSTGRESQL = "preserved IS false AND incident_id IS NOT NULL"

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("delivery_id", sa.String(64), nullable=False),
    sa.Column("received_at", _ts, nullable=False),
    sa.Column("raw_sha256", sa.String(64), nullable=False),
    sa.Column("alert_json", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, default="pending"),
    sa.Column("incident_id", sa.String(40)),
    sa.Column("error", sa.Text),
    sa.Column("owner", sa.String(128)),  # the dispatcher that holds the alert now
    sa.Column("claimed_at", _ts),
    sa.Column("preserved", sa.Boolean, nullable=False, default=False),  # its payload is evidence
    sa.UniqueConstraint("source", "delivery_id", name="uq_inbox_delivery"),
    sa.Index("ix_inbox_status", "status"),
    sa.Index("ix_inbox_incident_preserved", "incident_id", "preserved"),
    # The alerts still to keep as evidence (read every second): a few rows, not the inbox.
    sa.Index(
        "ix_inbox_unpreserved",
        "received_at",
        sqlite_where=sa.text(UNPRESERVED_SQLITE),
        postgresql_where=sa.text(UNPRESERVED_POSTGRESQL),
    ),
)

incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("fingerprint", sa.String(128), nullable=False, index=True),
    sa.Column("title", sa.String(500), nullable=False),
    sa.Column("type", sa.String(64)),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("updated_at", _ts, nullable=False),
    sa.Column("correlate_until", _ts, nullable=False),
    sa.Column("legal_hold", sa.Text),  # who put it on hold, when and why (JSON); null: not held
)

incident_alerts = sa.Table(
    "incident_alerts",
    metadata,
    sa.Column("incident_id", sa.String(40), primary_key=True),
    sa.Column("alert_id", sa.String(40), primary_key=True),
)

timeline = sa.Table(
    "timeline",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(40), nullable=False, index=True),
    sa.Column("at", _ts, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("step_id", sa.String(64)),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("data_json", sa.Text, nullable=False, default="{}"),
)

playbook_runs = sa.Table(
    "playbook_runs",
    metadata,
    sa.Column("incident_id", sa.String(40), primary_key=True),
    sa.Column("playbook", sa.String(64), primary_key=True),
    sa.Column("flow_run_id", sa.String(40), index=True),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("owner", sa.String(128)),
    sa.Column("heartbeat_at", _ts),
    sa.Column("finished", sa.Boolean, nullable=False, default=False),
)

# The replica ids in use: a replica holds its id with a token of its process and beats it
# every second, so a second live process under the same id is refused (aisoar/store/replicas.py).
replica_ids = sa.Table(
    "replica_ids",
    metadata,
    sa.Column("replica_id", sa.String(200), primary_key=True),
    sa.Column("instance", sa.String(200), nullable=False),
    sa.Column("started_at", _ts, nullable=False),
    sa.Column("heartbeat_at", _ts, nullable=False),
)

step_results = sa.Table(
    "step_results",
    metadata,
    sa.Column("incident_id", sa.String(40), primary_key=True),
    sa.Column("playbook", sa.String(64), primary_key=True),
    sa.Column("step_id", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("output_json", sa.Text, nullable=False),
    sa.Column("at", _ts, nullable=False),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("incident_id", sa.String(40), nullable=False),
    sa.Column("playbook", sa.String(64), nullable=False),
    sa.Column("step_id", sa.String(64), nullable=False),
    sa.Column("action", sa.String(128), nullable=False),
    sa.Column("args_sha256", sa.String(64), nullable=False),
    sa.Column("approvers_json", sa.Text, nullable=False),
    sa.Column("quorum", sa.Integer, nullable=False),
    sa.Column("expires_at", _ts, nullable=False),
    sa.Column("on_timeout", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("decided_by", sa.String(256)),
    sa.Column("reason", sa.Text),
    sa.Column("decided_at", _ts),
    sa.Column("answers_json", sa.Text, nullable=False, default="{}"),
    sa.Column("allowed_json", sa.Text, nullable=False, server_default="[]"),
    sa.Column("requested_by", sa.String(64)),
    sa.Column("allow_self", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("flow_run_id", sa.String(40)),
    sa.Column("opened_at", _ts),
    sa.Column("escalation_level", sa.Integer, nullable=False, server_default="0"),
    sa.Column("slack_channel", sa.String(32)),
    sa.Column("slack_ts", sa.String(32)),
    sa.Column("wake_pending", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("incident_id", "playbook", "step_id", name="uq_approval_step"),
)

approval_answers = sa.Table(
    "approval_answers",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("approval_id", sa.String(40), nullable=False, index=True),
    sa.Column("at", _ts, nullable=False),
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

approval_codes_table = sa.Table(
    "approval_codes",
    metadata,
    sa.Column("approval_id", sa.String(40), primary_key=True),
    sa.Column("person", sa.String(64), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("expires_at", _ts, nullable=False),
    sa.Column("used_at", _ts),
)

evidence_items = sa.Table(
    "evidence_items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(40), nullable=False, index=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("media_type", sa.String(64), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("location", sa.Text, nullable=False),
    sa.Column("collected_by", sa.String(256), nullable=False),
    sa.Column("collected_at", _ts, nullable=False),
    sa.Column("asset", sa.String(256), index=True),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("entry_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("chain", sa.String(16)),  # "incident": chained within its incident; null: the store's chain (before 0005)
    sa.Column("flow_run_id", sa.String(64)),  # the run whose step collected it (null: none, or before 0009)
)


regulatory_clocks = sa.Table(
    "regulatory_clocks",
    metadata,
    sa.Column("incident_id", sa.String(40), primary_key=True),
    sa.Column("key", sa.String(40), primary_key=True),  # gdpr-art33, nis2-early-warning ...
    sa.Column("regime", sa.String(64), nullable=False),
    sa.Column("what", sa.Text, nullable=False),
    sa.Column("why", sa.Text, nullable=False),
    sa.Column("aware_at", _ts, nullable=False),
    sa.Column("due_at", _ts, nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),  # running, notified, not_applicable
    sa.Column("decided_by", sa.String(200)),
    sa.Column("reason", sa.Text),
    sa.Column("decided_at", _ts),
    sa.Column("reminded_at", _ts),
    sa.Column("escalated_at", _ts),
)


def timeline_row(
    incident_id: str, kind: str, message: str, step_id: str | None = None, data: dict[str, Any] | None = None
) -> sa.Insert:
    """The insert of one timeline entry."""
    return timeline.insert().values(**timeline_values(incident_id, kind, message, step_id, data))


def timeline_values(
    incident_id: str, kind: str, message: str, step_id: str | None = None, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One timeline entry's row (many are inserted in one statement)."""
    return {
        "incident_id": incident_id,
        "at": utcnow(),
        "kind": kind,
        "step_id": step_id,
        "message": message,
        "data_json": json.dumps(data or {}, default=str),
    }


def new_id(prefix: str) -> str:
    return f"{prefix}-{utcnow():%Y%m%d}-{secrets.token_hex(4)}"


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; everything stored here is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


MAX_VALUES = 3000  # bound values in one statement (SQLite takes 32766, PostgreSQL 65535)


@functools.lru_cache(maxsize=64)
def _insert_sql(table: str, columns: tuple[str, ...], rows: int, placeholder: str) -> str:
    """``INSERT INTO table (columns) VALUES (...), (...)`` for ``rows`` rows. The names are the
    schema's own (quoted by the dialect), never input; every value is a bound parameter."""
    one = "(" + ", ".join([placeholder] * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ", ".join([one] * rows)  # noqa: S608


class StoreBase:
    """What every aggregate's methods share: the engine and one short transaction per call."""

    engine: Engine
    _lock_engine: Engine  # PostgreSQL only: connections for ``hold``
    # SQLite: the writers take turns here (``SqliteWriters``, across threads and processes)
    # before they ask SQLite for its write lock. SQLite's own wait for a busy database sleeps 1
    # to 100 ms between tries, so a dozen threads writing at once spent most of a storm asleep
    # with the database free; waiting here, the next writer starts the moment the last one
    # commits. PostgreSQL: no lock.
    _writers: AbstractContextManager[Any] = nullcontext()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._writers, self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A transaction that only reads. On SQLite it begins deferred and without the writers'
        lock: in WAL mode a reader sees the last commit and waits for no writer. On PostgreSQL
        it is no transaction at all: at READ COMMITTED every statement sees the last commits
        whether or not it is in one, and without BEGIN and COMMIT a read is one round trip to
        the server instead of three (in a burst, a third of the store's round trips)."""
        with self.engine.connect() as conn:
            if self.shared:
                conn.execution_options(isolation_level="AUTOCOMMIT")
            else:
                conn.execution_options(aisoar_read=True)
            with conn.begin():
                yield conn

    @property
    def shared(self) -> bool:
        """Whether several processes (replicas) may use this store at once: PostgreSQL."""
        return self.engine.dialect.name == "postgresql"

    def _serialize(self, conn: Connection, key: str) -> None:
        """Hold ``key`` until the transaction ends, across every process using the store.

        On PostgreSQL a transaction-scoped advisory lock; on SQLite nothing is needed: every
        transaction but ``_read``'s begins IMMEDIATE (one writer at a time, aisoar/store/__init__.py)."""
        if self.shared:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key(key))))

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Hold ``key`` for the block, across every process using the store (PostgreSQL: a
        session advisory lock on a connection of its own); on SQLite, across this process's
        threads (SQLite is one machine, one aisoar process). For work outside the store that
        must not run twice at once, e.g. starting an incident's one Slack thread."""
        if not self.shared:
            with _local_lock(key):
                yield
            return
        number = lock_key(key)
        with self._lock_engine.connect() as conn:
            conn.execute(sa.select(sa.func.pg_advisory_lock(number)))
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(number)))
                conn.commit()

    def _insert_rows(self, conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """Insert many rows in as few statements as the database takes (a few thousand values
        each). Not ``executemany``: SQLite's driver lets go of the interpreter for every row and
        waits for it again, which under a busy ingress made a 250-row insert take a second."""
        if not rows:
            return
        columns = [column for column in table.columns if column.name in rows[0] or column.default is not None]
        dialect = conn.dialect
        processors = [column.type._cached_bind_processor(dialect) for column in columns]
        # The tables' defaults are constants (``default=False``), applied here as SQLAlchemy would.
        if any(not getattr(column.default, "is_scalar", True) for column in columns):
            raise ValueError(f"{table.name} has a default that is not a constant: insert its rows one by one")
        defaults = [getattr(column.default, "arg", None) for column in columns]
        placeholder = "?" if dialect.paramstyle == "qmark" else "%s"
        quote = dialect.identifier_preparer.quote
        per_statement = max(1, MAX_VALUES // len(columns))
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            values: list[Any] = []
            for row in chunk:
                for column, process, default in zip(columns, processors, defaults, strict=True):
                    value = row.get(column.name, default)
                    values.append(process(value) if process is not None and value is not None else value)
            conn.exec_driver_sql(
                _insert_sql(quote(table.name), tuple(quote(c.name) for c in columns), len(chunk), placeholder),
                tuple(values),
            )

    def _insert_new(self, conn: Connection, table: sa.Table, **values: Any) -> bool:
        """Insert the row unless one with its key exists; whether it was inserted. Never an
        error that would end the transaction (PostgreSQL aborts one on a failed insert).

        Whether it was inserted is read from the row RETURNING gives back, not from the row
        count: psycopg reports -1 for this statement, which read as "inserted" every time."""
        dialect = sqlite_insert if self.engine.dialect.name == "sqlite" else postgresql_insert
        key = list(table.primary_key.columns)
        result = conn.execute(dialect(table).values(**values).on_conflict_do_nothing().returning(*key))
        return result.first() is not None

    def _upsert(self, conn: Connection, table: sa.Table, key: tuple[str, ...], **values: Any) -> None:
        """Insert the row, or update the one with its key: one statement, so two writers of one
        key (two replicas, say) never fail on the key, whichever comes second wins."""
        dialect = sqlite_insert if self.engine.dialect.name == "sqlite" else postgresql_insert
        insert = dialect(table).values(**values)
        changed = {name: insert.excluded[name] for name in values if name not in key}
        conn.execute(insert.on_conflict_do_update(index_elements=list(key), set_=changed))


_LOCAL: dict[str, threading.Lock] = {}
_LOCAL_GUARD = threading.Lock()


def _local_lock(key: str) -> threading.Lock:
    with _LOCAL_GUARD:
        return _LOCAL.setdefault(key, threading.Lock())


class SqliteWriters:
    """The turn of the writers of one SQLite database: this process's threads take it in turn (a
    reentrant lock), and the processes among them by an ``flock`` on ``<database>.writers``. The
    kernel wakes the next process the moment the last one lets go, where SQLite's busy handler
    would have it sleep up to 100 ms between tries (the webhook processes and the main process
    write the same inbox in a storm). The lock of a process that dies goes with it."""

    def __init__(self, path: str) -> None:
        self.path = f"{path}.writers"
        self._turn = threading.RLock()
        self._depth = 0  # nested transactions of the thread holding the turn
        self._fd: int | None = None

    def __enter__(self) -> None:
        self._turn.acquire()
        if self._depth == 0:
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._turn.release()
                raise
        self._depth += 1

    def __exit__(self, *_: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._turn.release()


_WRITERS: dict[str, SqliteWriters] = {}


def sqlite_writers(path: str) -> SqliteWriters:
    """The turn the writers of the SQLite database at ``path`` take (one per file in a process,
    shared by every Store object open on it)."""
    with _LOCAL_GUARD:
        return _WRITERS.setdefault(path, SqliteWriters(path))


def lock_key(key: str) -> int:
    """A stable signed 64-bit number for ``key`` (PostgreSQL's advisory lock ids)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
