"""The inbox: every accepted alert, kept before anything else happens to it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from aisoar.models import Alert
from aisoar.store.schema import StoreBase, inbox


@dataclass(frozen=True)
class InboxRecord:
    id: str
    source: str
    status: str
    incident_id: str | None
    error: str | None


class Inbox(StoreBase):
    # -- inbox ---------------------------------------------------------------------------
    def accept_alert(self, alert: Alert, delivery_id: str) -> tuple[str, bool]:
        """Persist an alert; returns (alert id, created). A repeated delivery is not stored twice,
        also when both copies arrive at the same instant (the unique constraint decides)."""
        try:
            return self._accept(alert, delivery_id)
        except sa.exc.IntegrityError:
            with self._tx() as conn:
                existing = conn.execute(
                    sa.select(inbox.c.id).where(inbox.c.source == alert.source, inbox.c.delivery_id == delivery_id)
                ).scalar()
            if existing is None:
                raise
            return str(existing), False

    def _accept(self, alert: Alert, delivery_id: str) -> tuple[str, bool]:
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

    def alert_record(self, alert_id: str) -> InboxRecord | None:
        with self._tx() as conn:
            row = conn.execute(
                sa.select(inbox.c.id, inbox.c.source, inbox.c.status, inbox.c.incident_id, inbox.c.error).where(
                    inbox.c.id == alert_id
                )
            ).first()
        return InboxRecord(row.id, row.source, row.status, row.incident_id, row.error) if row else None

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
