"""Incidents, their alerts and their timeline; correlation by fingerprint."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from aisoar.models import Alert, Incident, IncidentStatus, Severity, TimelineEntry, utcnow
from aisoar.store.schema import (
    StoreBase,
    aware,
    inbox,
    incident_alerts,
    incidents,
    new_id,
    playbook_runs,
    timeline,
    timeline_row,
    timeline_values,
)
from aisoar.taxonomy import IncidentType

Note = tuple[str, str, dict[str, Any] | None]  # a timeline entry: kind, message, data


class Incidents(StoreBase):
    # -- incidents -----------------------------------------------------------------------
    def correlate(
        self,
        alert: Alert,
        incident_type: IncidentType | None,
        severity: Severity,
        window: timedelta,
        entries: Sequence[Note] = (),
        opened: Sequence[Note] = (),
    ) -> tuple[str, bool]:
        """Attach the alert to the open incident with its fingerprint inside the window, or open one.

        In the same transaction: ``entries`` on the incident's timeline, and ``opened`` too when
        the incident is new. Two alerts with one fingerprint correlate one after the other, in
        this process or any other using the store, so they never open two incidents.
        """
        now = utcnow()
        with self._tx() as conn:
            self._serialize(conn, f"fingerprint:{alert.fingerprint}")
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
            _attach(conn, str(incident_id), alert.id, new=created)
            notes = [*entries, *(opened if created else [])]
            self._insert_rows(
                conn, timeline, [timeline_values(incident_id, kind, text, None, data) for kind, text, data in notes]
            )
        return incident_id, created

    def join_incident(
        self,
        incident_id: str,
        fingerprint: str,
        alerts: Sequence[tuple[str, Sequence[Note]]],
        severity: Severity,
        window: timedelta,
        stale_before: datetime,
    ) -> list[str]:
        """Alerts of one fingerprint that arrived together join, in one transaction, the incident
        the first of them correlated to a moment ago: attached, their entries (``alerts``: id,
        entries) on the timeline, marked dispatched, the incident's window extended and its
        severity raised as ``correlate`` does. Only alerts still pending, not attached to an
        incident yet and held by no other dispatcher (a claim younger than ``stale_before``) join;
        the others are left as they are. The ids that joined; none when the incident was closed
        meanwhile."""
        now = utcnow()
        notes = dict(alerts)
        with self._tx() as conn:
            self._serialize(conn, f"fingerprint:{fingerprint}")
            row = conn.execute(
                sa.select(incidents.c.severity, incidents.c.status).where(incidents.c.id == incident_id)
            ).first()
            if row is None or row.status == IncidentStatus.closed.value:
                return []
            free = sa.and_(
                inbox.c.id.in_(list(notes)),
                inbox.c.status == "pending",
                inbox.c.incident_id.is_(None),
                sa.or_(inbox.c.owner.is_(None), inbox.c.claimed_at < stale_before),
            )
            if self.shared:  # the rows are locked as they are read: another replica waits
                found = conn.execute(sa.select(inbox.c.id).where(free).with_for_update()).scalars().all()
            else:  # one row, not one per alert (see _insert_rows); the write lock is held already
                listed = conn.execute(sa.select(sa.func.group_concat(inbox.c.id, ",")).where(free)).scalar()
                found = listed.split(",") if listed else []
            joined = set(found)
            if not joined:
                return []
            conn.execute(
                inbox.update()
                .where(inbox.c.id.in_(list(joined)))
                .values(incident_id=incident_id, status="dispatched", error=None, owner=None, claimed_at=None)
            )
            order = [alert_id for alert_id in notes if alert_id in joined]
            self._insert_rows(conn, incident_alerts, [{"incident_id": incident_id, "alert_id": a} for a in order])
            self._insert_rows(
                conn,
                timeline,
                [timeline_values(incident_id, kind, text, data=data) for a in order for kind, text, data in notes[a]],
            )
            values: dict[str, Any] = {"updated_at": now, "correlate_until": now + window}
            if severity.rank > Severity(row.severity).rank:
                values["severity"] = severity.value
            conn.execute(incidents.update().where(incidents.c.id == incident_id).values(**values))
        return order

    def join_open_incident(self, alert: Alert) -> str | None:
        """Attach the alert to the newest incident with its fingerprint that is not closed,
        without opening one or extending its correlation window (a resolved notification)."""
        with self._tx() as conn:
            incident_id = conn.execute(
                sa.select(incidents.c.id)
                .where(
                    incidents.c.fingerprint == alert.fingerprint,
                    incidents.c.status != IncidentStatus.closed.value,
                )
                .order_by(incidents.c.created_at.desc())
                .limit(1)
            ).scalar()
            if incident_id is None:
                return None
            _attach(conn, str(incident_id), alert.id)
        return str(incident_id)

    def incident_counts(self) -> dict[str, int]:
        """How many incidents are in each status."""
        with self._read() as conn:
            rows = conn.execute(sa.select(incidents.c.status, sa.func.count()).group_by(incidents.c.status)).all()
        return {str(status): int(count) for status, count in rows}

    def set_incident_status(self, incident_id: str, status: IncidentStatus) -> None:
        """Set the status; a change is on the timeline (``data.status``: the incident's metrics
        read when it was contained, eradicated, recovered, closed)."""
        with self._tx() as conn:
            before = conn.execute(sa.select(incidents.c.status).where(incidents.c.id == incident_id)).scalar()
            conn.execute(
                incidents.update().where(incidents.c.id == incident_id).values(status=status.value, updated_at=utcnow())
            )
            if before is not None and before != status.value:
                conn.execute(
                    timeline_row(
                        incident_id, "incident", f"status: {before} -> {status.value}", data={"status": status.value}
                    )
                )

    def get_incident(
        self, incident_id: str, *, with_timeline: bool = True, kinds: Collection[str] | None = None
    ) -> Incident:
        """The incident; ``with_timeline=False``: without its timeline (an empty list), for a
        reader that needs only the rest (a storm's incident has thousands of entries);
        ``kinds``: only the timeline entries of these kinds."""
        with self._read() as conn:
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
                    at=aware(r.at) or utcnow(),
                    kind=r.kind,
                    step_id=r.step_id,
                    message=r.message,
                    data=json.loads(r.data_json),
                )
                for r in (
                    conn.execute(
                        sa.select(timeline)
                        .where(timeline.c.incident_id == incident_id)
                        .where(timeline.c.kind.in_(kinds) if kinds is not None else sa.true())
                        .order_by(timeline.c.seq)
                    )
                    if with_timeline
                    else ()
                )
            ]
        return Incident(
            id=row.id,
            title=row.title,
            type=IncidentType(row.type) if row.type else None,
            severity=Severity(row.severity),
            status=IncidentStatus(row.status),
            fingerprint=row.fingerprint,
            created_at=aware(row.created_at) or utcnow(),
            updated_at=aware(row.updated_at) or utcnow(),
            alert_ids=alert_ids,
            flow_run_ids=runs,
            timeline=entries,
        )

    def list_incidents(self, limit: int = 50) -> list[Incident]:
        return [self.get_incident(i) for i in self.list_incident_ids(limit)]

    def list_incident_ids(self, limit: int = 50) -> list[str]:
        """The newest incidents' ids, newest first."""
        with self._read() as conn:
            return [
                r.id
                for r in conn.execute(sa.select(incidents.c.id).order_by(incidents.c.created_at.desc()).limit(limit))
            ]

    def add_timeline(
        self, incident_id: str, kind: str, message: str, step_id: str | None = None, data: dict[str, Any] | None = None
    ) -> None:
        with self._tx() as conn:
            conn.execute(timeline_row(incident_id, kind, message, step_id, data))

    def add_request(self, incident_id: str, step_id: str, message: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        """A "request" entry (a step is about to send a change), in one transaction with the
        data of the step's earlier request entries, which it returns (oldest first)."""
        with self._tx() as conn:
            earlier = conn.execute(
                sa.select(timeline.c.data_json)
                .where(timeline.c.incident_id == incident_id, timeline.c.step_id == step_id)
                .where(timeline.c.kind == "request")
                .order_by(timeline.c.seq)
            ).all()
            conn.execute(timeline_row(incident_id, "request", message, step_id, data))
        return [json.loads(row.data_json) for row in earlier]

    def slack_channel_id(self, name: str) -> str | None:
        """The id Slack answered for the channel configured as ``name``, from the latest thread
        started in it (a run that lost its answer looks for its message by id)."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(timeline.c.data_json)
                .where(timeline.c.kind == "notify", timeline.c.data_json.like('%"slack_channel_name"%'))
                .order_by(timeline.c.seq.desc())
                .limit(50)
            ).all()
        for row in rows:
            data = json.loads(row.data_json)
            if data.get("slack_channel_name") == name and isinstance(data.get("slack_channel"), str):
                return str(data["slack_channel"])
        return None

    def timeline_data(self, incident_id: str, kind: str, step_id: str) -> list[dict[str, Any]]:
        """The data of the incident's timeline entries of this kind about this step, oldest first
        (without reading the whole incident)."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(timeline.c.data_json)
                .where(timeline.c.incident_id == incident_id, timeline.c.kind == kind, timeline.c.step_id == step_id)
                .order_by(timeline.c.seq)
            ).all()
        return [json.loads(row.data_json) for row in rows]


def _attach(conn: sa.Connection, incident_id: str, alert_id: str, new: bool = False) -> None:
    """The alert is one of the incident's (once), and its inbox row says so. ``new``: the
    incident was opened in this transaction (it has no alerts yet)."""
    exists = None
    if not new:
        exists = conn.execute(
            sa.select(incident_alerts.c.alert_id).where(
                incident_alerts.c.incident_id == incident_id, incident_alerts.c.alert_id == alert_id
            )
        ).first()
    if exists is None:
        conn.execute(incident_alerts.insert().values(incident_id=incident_id, alert_id=alert_id))
    conn.execute(inbox.update().where(inbox.c.id == alert_id).values(incident_id=incident_id))
