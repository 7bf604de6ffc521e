"""The aisoar store: inbox, incidents, timeline, step results, approvals, evidence ledger.

SQLAlchemy Core over SQLite (default, WAL) or PostgreSQL. Every method is one short
transaction; callers get pydantic models or plain values back, never rows.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection, Engine

from aisoar.models import Alert, Incident, IncidentStatus, Severity, TimelineEntry, utcnow
from aisoar.taxonomy import IncidentType

metadata = sa.MetaData()
_ts = sa.DateTime(timezone=True)

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
    sa.UniqueConstraint("source", "delivery_id", name="uq_inbox_delivery"),
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
    sa.UniqueConstraint("incident_id", "playbook", "step_id", name="uq_approval_step"),
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
)


class ApprovalRecord(BaseModel):
    id: str
    incident_id: str
    playbook: str
    step_id: str
    action: str
    args_sha256: str
    approvers: list[str]
    quorum: int
    expires_at: datetime
    on_timeout: str
    status: str
    decided_by: str | None = None
    reason: str | None = None
    decided_at: datetime | None = None
    answers: dict[str, dict[str, Any]] = Field(default_factory=dict, description="pause key -> answer")


class EvidenceRecord(BaseModel):
    incident_id: str
    sha256: str
    size: int
    media_type: str
    description: str
    location: str
    collected_by: str
    collected_at: datetime
    asset: str | None = None
    prev_hash: str
    entry_hash: str

    def custody_entry(self) -> dict[str, Any]:
        """What the custody hash covers (``asset`` only when set, as entries before it existed)."""
        entry = self.model_dump(exclude={"prev_hash", "entry_hash"})
        if entry.get("asset") is None:
            entry.pop("asset", None)
        return entry


class StepResult(BaseModel):
    status: str
    output: dict[str, Any]
    at: datetime


GENESIS = "0" * 64


def new_id(prefix: str) -> str:
    return f"{prefix}-{utcnow():%Y%m%d}-{secrets.token_hex(4)}"


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; everything stored here is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _canonical(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


def custody_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"), default=_canonical)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self._custody_lock = threading.Lock()
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = sa.create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=True
            )

            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        metadata.create_all(self.engine)
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns later versions introduced to a store created by an earlier one."""
        columns = {c["name"] for c in sa.inspect(self.engine).get_columns("evidence_items")}
        if "asset" not in columns:
            with self._tx() as conn:
                conn.execute(sa.text("ALTER TABLE evidence_items ADD COLUMN asset VARCHAR(256)"))

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- inbox ---------------------------------------------------------------------------
    def accept_alert(self, alert: Alert, delivery_id: str) -> tuple[str, bool]:
        """Persist an alert; returns (alert id, created). A repeated delivery is not stored twice."""
        with self._tx() as conn:
            existing = conn.execute(
                sa.select(inbox.c.id).where(inbox.c.source == alert.source, inbox.c.delivery_id == delivery_id)
            ).scalar()
            if existing:
                return str(existing), False
            conn.execute(
                inbox.insert().values(
                    id=alert.id,
                    source=alert.source,
                    delivery_id=delivery_id,
                    received_at=alert.received_at,
                    raw_sha256=alert.raw_sha256,
                    alert_json=alert.model_dump_json(),
                    status="pending",
                )
            )
        return alert.id, True

    def pending_alerts(self, received_before: datetime | None = None, limit: int = 100) -> list[Alert]:
        condition = inbox.c.status == "pending"
        if received_before is not None:
            condition = sa.and_(condition, inbox.c.received_at < received_before)
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(inbox.c.alert_json).where(condition).order_by(inbox.c.received_at).limit(limit)
            ).all()
        return [Alert.model_validate_json(row.alert_json) for row in rows]

    def alert_status(self, alert_id: str) -> tuple[str, str | None, str | None] | None:
        with self._tx() as conn:
            row = conn.execute(
                sa.select(inbox.c.status, inbox.c.incident_id, inbox.c.error).where(inbox.c.id == alert_id)
            ).first()
        return (row.status, row.incident_id, row.error) if row else None

    def mark_alert(self, alert_id: str, status: str, incident_id: str | None = None, error: str | None = None) -> None:
        with self._tx() as conn:
            conn.execute(
                inbox.update().where(inbox.c.id == alert_id).values(status=status, incident_id=incident_id, error=error)
            )

    def get_alert(self, alert_id: str) -> Alert:
        with self._tx() as conn:
            row = conn.execute(sa.select(inbox.c.alert_json).where(inbox.c.id == alert_id)).first()
        if row is None:
            raise KeyError(f"no alert {alert_id}")
        return Alert.model_validate_json(row.alert_json)

    # -- incidents -----------------------------------------------------------------------
    def correlate(
        self, alert: Alert, incident_type: IncidentType | None, severity: Severity, window: timedelta
    ) -> tuple[str, bool]:
        """Attach the alert to the open incident with its fingerprint inside the window, or open one."""
        now = utcnow()
        with self._tx() as conn:
            row = conn.execute(
                sa.select(incidents.c.id, incidents.c.severity)
                .where(
                    incidents.c.fingerprint == alert.fingerprint,
                    incidents.c.correlate_until >= now,
                    incidents.c.status != IncidentStatus.closed.value,
                )
                .order_by(incidents.c.created_at.desc())
                .limit(1)
            ).first()
            if row is not None:
                incident_id, created = str(row.id), False
                values: dict[str, Any] = {"updated_at": now, "correlate_until": now + window}
                if severity.rank > Severity(row.severity).rank:
                    values["severity"] = severity.value
                conn.execute(incidents.update().where(incidents.c.id == incident_id).values(**values))
            else:
                incident_id, created = new_id("INC"), True
                conn.execute(
                    incidents.insert().values(
                        id=incident_id,
                        fingerprint=alert.fingerprint,
                        title=alert.title,
                        type=incident_type.value if incident_type else None,
                        severity=severity.value,
                        status=IncidentStatus.open.value,
                        created_at=now,
                        updated_at=now,
                        correlate_until=now + window,
                    )
                )
            exists = conn.execute(
                sa.select(incident_alerts.c.alert_id).where(
                    incident_alerts.c.incident_id == incident_id, incident_alerts.c.alert_id == alert.id
                )
            ).first()
            if exists is None:
                conn.execute(incident_alerts.insert().values(incident_id=incident_id, alert_id=alert.id))
            conn.execute(inbox.update().where(inbox.c.id == alert.id).values(incident_id=incident_id))
        return incident_id, created

    def set_incident_status(self, incident_id: str, status: IncidentStatus) -> None:
        with self._tx() as conn:
            conn.execute(
                incidents.update().where(incidents.c.id == incident_id).values(status=status.value, updated_at=utcnow())
            )

    def get_incident(self, incident_id: str) -> Incident:
        with self._tx() as conn:
            row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).first()
            if row is None:
                raise KeyError(f"no incident {incident_id}")
            alert_ids = [
                r.alert_id
                for r in conn.execute(
                    sa.select(incident_alerts.c.alert_id).where(incident_alerts.c.incident_id == incident_id)
                )
            ]
            runs = {
                r.playbook: r.flow_run_id
                for r in conn.execute(sa.select(playbook_runs).where(playbook_runs.c.incident_id == incident_id))
                if r.flow_run_id
            }
            entries = [
                TimelineEntry(
                    at=_aware(r.at) or utcnow(),
                    kind=r.kind,
                    step_id=r.step_id,
                    message=r.message,
                    data=json.loads(r.data_json),
                )
                for r in conn.execute(
                    sa.select(timeline).where(timeline.c.incident_id == incident_id).order_by(timeline.c.seq)
                )
            ]
        return Incident(
            id=row.id,
            title=row.title,
            type=IncidentType(row.type) if row.type else None,
            severity=Severity(row.severity),
            status=IncidentStatus(row.status),
            fingerprint=row.fingerprint,
            created_at=_aware(row.created_at) or utcnow(),
            updated_at=_aware(row.updated_at) or utcnow(),
            alert_ids=alert_ids,
            flow_run_ids=runs,
            timeline=entries,
        )

    def list_incidents(self, limit: int = 50) -> list[Incident]:
        with self._tx() as conn:
            ids = [
                r.id
                for r in conn.execute(sa.select(incidents.c.id).order_by(incidents.c.created_at.desc()).limit(limit))
            ]
        return [self.get_incident(i) for i in ids]

    def add_timeline(
        self, incident_id: str, kind: str, message: str, step_id: str | None = None, data: dict[str, Any] | None = None
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                timeline.insert().values(
                    incident_id=incident_id,
                    at=utcnow(),
                    kind=kind,
                    step_id=step_id,
                    message=message,
                    data_json=json.dumps(data or {}, default=str),
                )
            )

    # -- playbook runs ------------------------------------------------------------------
    def claim_playbook_run(self, incident_id: str, playbook: str) -> bool:
        """Record that this incident gets this playbook; False when it already has it."""
        with self._tx() as conn:
            exists = conn.execute(
                sa.select(playbook_runs.c.incident_id).where(
                    playbook_runs.c.incident_id == incident_id, playbook_runs.c.playbook == playbook
                )
            ).first()
            if exists:
                return False
            try:
                conn.execute(
                    playbook_runs.insert().values(incident_id=incident_id, playbook=playbook, created_at=utcnow())
                )
            except sa.exc.IntegrityError:
                return False  # claimed by a concurrent dispatch
        return True

    def set_flow_run(self, incident_id: str, playbook: str, flow_run_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                playbook_runs.update()
                .where(playbook_runs.c.incident_id == incident_id, playbook_runs.c.playbook == playbook)
                .values(flow_run_id=flow_run_id)
            )

    def ensure_playbook_run(self, incident_id: str, playbook: str, flow_run_id: str) -> None:
        """Record a scheduled run: one started outside the dispatcher (the Prefect UI's Run
        button), or a run scheduled again (a resumed approval, the UI's Retry)."""
        if self.claim_playbook_run(incident_id, playbook):
            self.set_flow_run(incident_id, playbook, flow_run_id)
        with self._tx() as conn:
            conn.execute(
                playbook_runs.update().where(playbook_runs.c.flow_run_id == flow_run_id).values(finished=False)
            )

    def take_playbook_run(self, incident_id: str, playbook: str, owner: str, stale_before: datetime) -> bool:
        """Become the runner of an incident's playbook unless a live runner holds it."""
        with self._tx() as conn:
            result = conn.execute(
                playbook_runs.update()
                .where(
                    playbook_runs.c.incident_id == incident_id,
                    playbook_runs.c.playbook == playbook,
                    playbook_runs.c.finished.is_(False),
                    _free_for(owner, stale_before),
                )
                .values(owner=owner, heartbeat_at=utcnow())
            )
        return bool(result.rowcount)

    def take_run(self, flow_run_id: str, owner: str, stale_before: datetime) -> bool:
        """Become the runner of a flow run unless a live runner has it (its heartbeat is fresh)."""
        with self._tx() as conn:
            result = conn.execute(
                playbook_runs.update()
                .where(
                    playbook_runs.c.flow_run_id == flow_run_id,
                    playbook_runs.c.finished.is_(False),
                    _free_for(owner, stale_before),
                )
                .values(owner=owner, heartbeat_at=utcnow())
            )
        return bool(result.rowcount)

    def heartbeat(self, owner: str, flow_run_ids: list[str]) -> None:
        if not flow_run_ids:
            return
        with self._tx() as conn:
            conn.execute(
                playbook_runs.update()
                .where(playbook_runs.c.owner == owner, playbook_runs.c.flow_run_id.in_(flow_run_ids))
                .values(heartbeat_at=utcnow())
            )

    def release_runs(self, owner: str, flow_run_id: str | None = None) -> None:
        """Let another runner (or this one after a restart) take over at once."""
        condition = playbook_runs.c.owner == owner
        if flow_run_id is not None:
            condition = sa.and_(condition, playbook_runs.c.flow_run_id == flow_run_id)
        with self._tx() as conn:
            conn.execute(playbook_runs.update().where(condition).values(owner=None))

    def finish_run(self, flow_run_id: str) -> None:
        with self._tx() as conn:
            conn.execute(playbook_runs.update().where(playbook_runs.c.flow_run_id == flow_run_id).values(finished=True))

    def orphaned_runs(self, owner: str, stale_before: datetime) -> list[str]:
        """Unfinished runs that no live runner holds."""
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(playbook_runs.c.flow_run_id).where(
                    playbook_runs.c.flow_run_id.is_not(None),
                    playbook_runs.c.finished.is_(False),
                    sa.or_(
                        playbook_runs.c.owner.is_(None),
                        sa.and_(playbook_runs.c.owner != owner, playbook_runs.c.heartbeat_at < stale_before),
                    ),
                )
            ).all()
        return [str(r.flow_run_id) for r in rows]

    def runs_without_flow_run(self, created_before: datetime) -> list[tuple[str, str]]:
        """Playbook runs selected for an incident whose flow run was never created."""
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(playbook_runs.c.incident_id, playbook_runs.c.playbook).where(
                    playbook_runs.c.flow_run_id.is_(None), playbook_runs.c.created_at < created_before
                )
            ).all()
        return [(r.incident_id, r.playbook) for r in rows]

    # -- step results -------------------------------------------------------------------
    def step_result(self, incident_id: str, playbook: str, step_id: str) -> StepResult | None:
        with self._tx() as conn:
            row = conn.execute(
                sa.select(step_results).where(
                    step_results.c.incident_id == incident_id,
                    step_results.c.playbook == playbook,
                    step_results.c.step_id == step_id,
                )
            ).first()
        if row is None:
            return None
        return StepResult(status=row.status, output=json.loads(row.output_json), at=_aware(row.at) or utcnow())

    def step_results(self, incident_id: str, playbook: str) -> dict[str, StepResult]:
        """Every recorded step result of one playbook for one incident, by step id."""
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(step_results).where(
                    step_results.c.incident_id == incident_id, step_results.c.playbook == playbook
                )
            ).all()
        return {
            str(row.step_id): StepResult(
                status=row.status, output=json.loads(row.output_json), at=_aware(row.at) or utcnow()
            )
            for row in rows
        }

    def record_step(self, incident_id: str, playbook: str, step_id: str, status: str, output: dict[str, Any]) -> None:
        with self._tx() as conn:
            conn.execute(
                step_results.delete().where(
                    step_results.c.incident_id == incident_id,
                    step_results.c.playbook == playbook,
                    step_results.c.step_id == step_id,
                )
            )
            conn.execute(
                step_results.insert().values(
                    incident_id=incident_id,
                    playbook=playbook,
                    step_id=step_id,
                    status=status,
                    output_json=json.dumps(output, default=str),
                    at=utcnow(),
                )
            )

    # -- approvals ----------------------------------------------------------------------
    def open_approval(
        self,
        incident_id: str,
        playbook: str,
        step_id: str,
        action: str,
        args_sha256: str,
        approvers: list[str],
        quorum: int,
        timeout: timedelta,
        on_timeout: str,
    ) -> tuple[ApprovalRecord, bool]:
        """Create the approval record for a step, or return the one that exists (and False)."""
        with self._tx() as conn:
            row = conn.execute(
                sa.select(approvals).where(
                    approvals.c.incident_id == incident_id,
                    approvals.c.playbook == playbook,
                    approvals.c.step_id == step_id,
                )
            ).first()
            created = row is None
            if row is None:
                values = dict(
                    id=new_id("APR"),
                    incident_id=incident_id,
                    playbook=playbook,
                    step_id=step_id,
                    action=action,
                    args_sha256=args_sha256,
                    approvers_json=json.dumps(approvers),
                    quorum=quorum,
                    expires_at=utcnow() + timeout,
                    on_timeout=on_timeout,
                    status="pending",
                    answers_json="{}",
                )
                conn.execute(approvals.insert().values(**values))
                row = conn.execute(sa.select(approvals).where(approvals.c.id == values["id"])).first()
        assert row is not None
        return _approval(row), created

    def add_approval_answer(
        self, approval_id: str, key: str, approver: str, approve: bool | None, reason: str
    ) -> ApprovalRecord:
        with self._tx() as conn:
            row = conn.execute(sa.select(approvals.c.answers_json).where(approvals.c.id == approval_id)).first()
            assert row is not None
            answers = json.loads(row.answers_json)
            answers.setdefault(key, {"approver": approver, "approve": approve, "reason": reason, "at": str(utcnow())})
            conn.execute(
                approvals.update().where(approvals.c.id == approval_id).values(answers_json=json.dumps(answers))
            )
            updated = conn.execute(sa.select(approvals).where(approvals.c.id == approval_id)).first()
        assert updated is not None
        return _approval(updated)

    def expired_approvals(self, now: datetime) -> list[ApprovalRecord]:
        """Pending approvals past their expiry: their runs must wake up to apply the default."""
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(approvals).where(approvals.c.status == "pending", approvals.c.expires_at <= now)
            ).all()
        return [_approval(r) for r in rows]

    def pending_approvals(self) -> list[ApprovalRecord]:
        """Approvals still waiting for an answer (the runtime watches their runs)."""
        with self._tx() as conn:
            rows = conn.execute(sa.select(approvals).where(approvals.c.status == "pending")).all()
        return [_approval(r) for r in rows]

    def flow_run_of(self, incident_id: str, playbook: str) -> str | None:
        with self._tx() as conn:
            value = conn.execute(
                sa.select(playbook_runs.c.flow_run_id).where(
                    playbook_runs.c.incident_id == incident_id, playbook_runs.c.playbook == playbook
                )
            ).scalar()
        return str(value) if value else None

    def decide_approval(self, approval_id: str, status: str, decided_by: str, reason: str) -> ApprovalRecord:
        with self._tx() as conn:
            conn.execute(
                approvals.update()
                .where(approvals.c.id == approval_id, approvals.c.status == "pending")
                .values(status=status, decided_by=decided_by, reason=reason, decided_at=utcnow())
            )
            row = conn.execute(sa.select(approvals).where(approvals.c.id == approval_id)).first()
        assert row is not None
        return _approval(row)

    def approvals_for(self, incident_id: str) -> list[ApprovalRecord]:
        with self._tx() as conn:
            rows = conn.execute(sa.select(approvals).where(approvals.c.incident_id == incident_id)).all()
        return [_approval(r) for r in rows]

    # -- evidence ledger ----------------------------------------------------------------
    def record_evidence(
        self,
        incident_id: str,
        sha256: str,
        size: int,
        media_type: str,
        description: str,
        location: str,
        collected_by: str,
        asset: str | None = None,
    ) -> EvidenceRecord:
        """Append a custody entry, chained to the previous entry's hash."""
        with self._custody_lock, self._tx() as conn:
            prev = conn.execute(
                sa.select(evidence_items.c.entry_hash).order_by(evidence_items.c.id.desc()).limit(1)
            ).scalar()
            entry: dict[str, Any] = dict(
                incident_id=incident_id,
                sha256=sha256,
                size=size,
                media_type=media_type,
                description=description,
                location=location,
                collected_by=collected_by,
                collected_at=utcnow(),
            )
            if asset is not None:
                entry["asset"] = asset
            prev_hash = str(prev) if prev else GENESIS
            entry_hash = custody_hash(prev_hash, entry)
            conn.execute(evidence_items.insert().values(**entry, prev_hash=prev_hash, entry_hash=entry_hash))
        return EvidenceRecord(**entry, prev_hash=prev_hash, entry_hash=entry_hash)

    def evidence_for(self, incident_id: str, asset: str | None = None) -> list[EvidenceRecord]:
        """The incident's evidence; with ``asset``, only what was collected about that asset."""
        query = sa.select(evidence_items).where(evidence_items.c.incident_id == incident_id)
        if asset is not None:
            query = query.where(evidence_items.c.asset == asset)
        with self._tx() as conn:
            rows = conn.execute(query.order_by(evidence_items.c.id)).all()
        return [_evidence(r) for r in rows]

    def verify_custody_chain(self) -> list[str]:
        """Recompute the whole chain; returns the problems found (empty when intact)."""
        problems: list[str] = []
        prev_hash = GENESIS
        with self._tx() as conn:
            rows = conn.execute(sa.select(evidence_items).order_by(evidence_items.c.id)).all()
        for row in rows:
            record = _evidence(row)
            entry = record.custody_entry()
            if record.prev_hash != prev_hash:
                problems.append(f"entry {row.id}: previous hash does not match the chain")
            if custody_hash(record.prev_hash, entry) != record.entry_hash:
                problems.append(f"entry {row.id}: entry hash does not match its content")
            prev_hash = record.entry_hash
        return problems


def _free_for(owner: str, stale_before: datetime) -> Any:
    """A run row this owner may take: nobody holds it, it holds it, or its holder went silent."""
    return sa.or_(
        playbook_runs.c.owner.is_(None),
        playbook_runs.c.owner == owner,
        playbook_runs.c.heartbeat_at.is_(None),
        playbook_runs.c.heartbeat_at < stale_before,
    )


def _approval(row: Any) -> ApprovalRecord:
    return ApprovalRecord(
        id=row.id,
        incident_id=row.incident_id,
        playbook=row.playbook,
        step_id=row.step_id,
        action=row.action,
        args_sha256=row.args_sha256,
        approvers=json.loads(row.approvers_json),
        quorum=row.quorum,
        expires_at=_aware(row.expires_at),
        on_timeout=row.on_timeout,
        status=row.status,
        decided_by=row.decided_by,
        reason=row.reason,
        decided_at=_aware(row.decided_at),
        answers=json.loads(row.answers_json or "{}"),
    )


def _evidence(row: Any) -> EvidenceRecord:
    return EvidenceRecord(
        incident_id=row.incident_id,
        sha256=row.sha256,
        size=row.size,
        media_type=row.media_type,
        description=row.description,
        location=row.location,
        collected_by=row.collected_by,
        collected_at=_aware(row.collected_at) or utcnow(),
        asset=row.asset,
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
    )
