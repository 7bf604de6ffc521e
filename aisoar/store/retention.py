"""Retention and legal hold of an incident's evidence: a closed incident's evidence files are
deleted once its retention has passed, unless the incident is on legal hold (who, when, why)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from aisoar.models import IncidentStatus, utcnow
from aisoar.store.schema import StoreBase, evidence_items, incidents, timeline_row


class Retention(StoreBase):
    def set_legal_hold(self, incident_id: str, by: str, reason: str) -> dict[str, Any]:
        """Put the incident on legal hold: its evidence is never deleted while it is."""
        hold = {"by": by[:200], "reason": reason[:1000], "at": utcnow().isoformat()}
        with self._tx() as conn:
            if not conn.execute(
                incidents.update().where(incidents.c.id == incident_id).values(legal_hold=json.dumps(hold))
            ).rowcount:
                raise KeyError(f"no incident {incident_id}")
            conn.execute(
                timeline_row(
                    incident_id, "incident", f"legal hold by {hold['by']}: {hold['reason']}", data={"legal_hold": hold}
                )
            )
        return hold

    def release_legal_hold(self, incident_id: str, by: str, reason: str) -> None:
        with self._tx() as conn:
            if not conn.execute(
                incidents.update().where(incidents.c.id == incident_id).values(legal_hold=None)
            ).rowcount:
                raise KeyError(f"no incident {incident_id}")
            conn.execute(timeline_row(incident_id, "incident", f"legal hold released by {by[:200]}: {reason[:1000]}"))

    def legal_hold(self, incident_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            value = conn.execute(sa.select(incidents.c.legal_hold).where(incidents.c.id == incident_id)).scalar()
        return json.loads(value) if value else None

    def evidence_past_retention(self, closed_before: datetime) -> tuple[dict[str, list[str]], set[str]]:
        """The evidence files (sha256) of the incidents closed before ``closed_before`` and not on
        hold, by incident, and the sha256s every other incident still keeps (a file is shared by
        its content: it is deleted only when no kept incident holds it)."""
        with self._read() as conn:
            due = {
                r.id
                for r in conn.execute(
                    sa.select(incidents.c.id).where(
                        incidents.c.status == IncidentStatus.closed.value,
                        incidents.c.updated_at < closed_before,
                        incidents.c.legal_hold.is_(None),
                    )
                )
            }
            rows = conn.execute(sa.select(evidence_items.c.incident_id, evidence_items.c.sha256)).all()
        expired: dict[str, list[str]] = {}
        kept: set[str] = set()
        for row in rows:
            if row.incident_id in due:
                expired.setdefault(row.incident_id, []).append(row.sha256)
            else:
                kept.add(row.sha256)
        return expired, kept
