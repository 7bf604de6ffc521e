"""The regulatory clocks of incidents (aisoar/clocks.py decides which): started once, reminded
once and escalated once (each claimed by one replica), and ended by a responder's record."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel

from aisoar.models import utcnow
from aisoar.store.schema import StoreBase, aware, regulatory_clocks, timeline_row

RUNNING, NOTIFIED, NOT_APPLICABLE = "running", "notified", "not_applicable"


class Clock(BaseModel):
    incident_id: str
    key: str
    regime: str
    what: str
    why: str
    aware_at: datetime
    due_at: datetime
    status: str
    decided_by: str | None = None
    reason: str | None = None
    decided_at: datetime | None = None
    reminded_at: datetime | None = None
    escalated_at: datetime | None = None

    def state(self, now: datetime) -> str:
        """running, overdue, notified (late), not applicable: what a responder reads."""
        if self.status == NOTIFIED:
            late = self.decided_at is not None and self.decided_at > self.due_at
            return "notified (late)" if late else "notified"
        if self.status == NOT_APPLICABLE:
            return "not applicable"
        return "OVERDUE" if now > self.due_at else "running"

    def line(self, now: datetime) -> str:
        due = f"{self.due_at:%Y-%m-%d %H:%M} UTC"
        said = f" by {self.decided_by}: {self.reason}" if self.decided_by and self.reason else ""
        return f"{self.regime}: {self.what}, due {due} ({self.state(now)}{said})"


class Clocks(StoreBase):
    def start_clocks(self, incident_id: str, started: list[dict[str, Any]]) -> list[Clock]:
        """Start the incident's clocks (each a dict of the table's fields) that are not running
        yet; those started now."""
        new: list[Clock] = []
        with self._tx() as conn:
            for values in started:
                row = {**values, "incident_id": incident_id, "status": RUNNING}
                if self._insert_new(conn, regulatory_clocks, **row):
                    clock = Clock(**row)
                    new.append(clock)
                    conn.execute(
                        timeline_row(
                            incident_id,
                            "clock",
                            f"regulatory clock started: {clock.regime}: {clock.what}, "
                            f"due {clock.due_at:%Y-%m-%d %H:%M} UTC ({clock.why})",
                            data={"clock": clock.key, "due_at": clock.due_at.isoformat()},
                        )
                    )
        return new

    def clocks_for(self, incident_id: str) -> list[Clock]:
        with self._read() as conn:
            rows = conn.execute(
                sa.select(regulatory_clocks)
                .where(regulatory_clocks.c.incident_id == incident_id)
                .order_by(regulatory_clocks.c.due_at, regulatory_clocks.c.key)
            ).all()
        return [_clock(row) for row in rows]

    def record_clock(self, incident_id: str, key: str, status: str, by: str, reason: str) -> Clock:
        """A responder's record: the authority was notified (with a reference), or the clock does
        not apply and why. Recorded again, the last record counts; every one is on the timeline."""
        if status not in (NOTIFIED, NOT_APPLICABLE):
            raise ValueError(f"a clock is recorded {NOTIFIED} or {NOT_APPLICABLE}, not {status}")
        now = utcnow()
        with self._tx() as conn:
            done = conn.execute(
                regulatory_clocks.update()
                .where(regulatory_clocks.c.incident_id == incident_id, regulatory_clocks.c.key == key)
                .values(status=status, decided_by=by[:200], reason=reason[:2000], decided_at=now)
            ).rowcount
            if not done:
                raise KeyError(f"incident {incident_id} has no clock {key}")
            row = conn.execute(
                sa.select(regulatory_clocks).where(
                    regulatory_clocks.c.incident_id == incident_id, regulatory_clocks.c.key == key
                )
            ).one()
            clock = _clock(row)
            said = "notified" if status == NOTIFIED else "not applicable"
            conn.execute(
                timeline_row(
                    incident_id,
                    "clock",
                    f"regulatory clock {clock.regime} ({clock.what}): {said}, "
                    f"recorded by {clock.decided_by}: {clock.reason}",
                    data={"clock": key, "status": status},
                )
            )
        return clock

    def claim_clocks(self, now: datetime, column: str, lead: float = 0.0) -> list[Clock]:
        """The running clocks whose reminder (``reminded_at``: ``lead`` of the window before the
        deadline) or escalation (``escalated_at``: the deadline passed) is due, each claimed by
        this call only (another replica's call does not get it too)."""
        mark = regulatory_clocks.c[column]
        with self._read() as conn:
            rows = conn.execute(
                sa.select(regulatory_clocks).where(regulatory_clocks.c.status == RUNNING, mark.is_(None))
            ).all()
        due = [c for c in map(_clock, rows) if now >= c.due_at - (c.due_at - c.aware_at) * lead]
        claimed: list[Clock] = []
        for clock in due:
            with self._tx() as conn:
                if conn.execute(
                    regulatory_clocks.update()
                    .where(
                        regulatory_clocks.c.incident_id == clock.incident_id,
                        regulatory_clocks.c.key == clock.key,
                        mark.is_(None),
                    )
                    .values({column: now})
                ).rowcount:
                    claimed.append(clock)
        return claimed


def _clock(row: Any) -> Clock:
    return Clock(
        incident_id=row.incident_id,
        key=row.key,
        regime=row.regime,
        what=row.what,
        why=row.why,
        aware_at=aware(row.aware_at) or utcnow(),
        due_at=aware(row.due_at) or utcnow(),
        status=row.status,
        decided_by=row.decided_by,
        reason=row.reason,
        decided_at=aware(row.decided_at),
        reminded_at=aware(row.reminded_at),
        escalated_at=aware(row.escalated_at),
    )
