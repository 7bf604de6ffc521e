"""The inbox: every accepted alert, kept before anything else happens to it."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from aisoar.models import Alert, utcnow
from aisoar.store.schema import StoreBase, inbox


@dataclass(frozen=True)
class InboxRecord:
    id: str
    source: str
    status: str
    incident_id: str | None
    error: str | None


@dataclass(frozen=True)
class Claim:
    """A dispatcher's claim on an alert: the incident it joined on an earlier try, if any."""

    incident_id: str | None


class Inbox(StoreBase):
    # -- inbox ---------------------------------------------------------------------------
    def accept_alert(self, alert: Alert, delivery_id: str) -> tuple[str, bool]:
        """Persist an alert; returns (alert id, created). A repeated delivery is not stored twice,
        also when both copies arrive at the same instant (the unique constraint decides)."""
        try:
            return self._accept(alert, delivery_id)
        except sa.exc.IntegrityError:
            with self._read() as conn:
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
            conn.execute(inbox.insert().values(**_inbox_row(alert, delivery_id)))
        return alert.id, True

    def accept_alerts(self, items: list[tuple[Alert, str]]) -> list[tuple[str, bool]]:
        """Persist many alerts (alert, delivery id) in one transaction, each as ``accept_alert``
        would: (alert id, created) for each, in order. A delivery already stored, or twice in
        ``items``, is not stored again. When another process stores one of them at the same
        instant (the unique constraint), each is accepted on its own instead."""
        try:
            return self._accept_many(items)
        except sa.exc.IntegrityError:
            return [self.accept_alert(alert, delivery_id) for alert, delivery_id in items]

    def _accept_many(self, items: list[tuple[Alert, str]]) -> list[tuple[str, bool]]:
        results: list[tuple[str, bool]] = []
        rows: list[dict[str, object]] = []
        # Built before the write lock is taken: serialising a batch takes milliseconds.
        prepared = [_inbox_row(alert, delivery_id) for alert, delivery_id in items]
        with self._tx() as conn:
            # Both columns of the unique index (source first), or the lookup reads the whole inbox.
            known: dict[tuple[str, str], str] = {
                (row.source, row.delivery_id): str(row.id)
                for row in conn.execute(
                    sa.select(inbox.c.id, inbox.c.source, inbox.c.delivery_id).where(
                        inbox.c.source.in_({alert.source for alert, _ in items}),
                        inbox.c.delivery_id.in_({delivery_id for _, delivery_id in items}),
                    )
                )
            }
            for (alert, delivery_id), row in zip(items, prepared, strict=True):
                existing = known.get((alert.source, delivery_id))
                if existing is not None:
                    results.append((existing, False))
                    continue
                known[(alert.source, delivery_id)] = alert.id
                results.append((alert.id, True))
                rows.append(row)
            self._insert_rows(conn, inbox, rows)
        return results

    def pending_alerts(self, received_before: datetime | None = None, limit: int = 100) -> list[Alert]:
        condition = inbox.c.status == "pending"
        if received_before is not None:
            condition = sa.and_(condition, inbox.c.received_at < received_before)
        with self._read() as conn:
            rows = conn.execute(
                sa.select(inbox.c.alert_json).where(condition).order_by(inbox.c.received_at).limit(limit)
            ).all()
        return [Alert.model_validate_json(row.alert_json) for row in rows]

    def claim_alert(self, alert_id: str, owner: str, stale_before: datetime) -> Claim | None:
        """Become the dispatcher of a pending alert unless someone holds it (its claim is younger
        than ``stale_before``), this dispatcher's other workers included: each alert is
        dispatched by one worker at a time. The claim says which incident the alert joined on
        an earlier try (None: not correlated yet); None when not claimed."""
        with self._tx() as conn:
            row = conn.execute(
                inbox.update()
                .where(
                    inbox.c.id == alert_id,
                    inbox.c.status == "pending",
                    sa.or_(inbox.c.owner.is_(None), inbox.c.claimed_at < stale_before),
                )
                .values(owner=owner, claimed_at=utcnow())
                .returning(inbox.c.incident_id)
            ).first()
        return None if row is None else Claim(incident_id=str(row.incident_id) if row.incident_id else None)

    def refresh_claims(self, owner: str) -> None:
        """The alerts this dispatcher is working on are still held (its heartbeat)."""
        with self._tx() as conn:
            conn.execute(
                inbox.update().where(inbox.c.owner == owner, inbox.c.status == "pending").values(claimed_at=utcnow())
            )

    def release_claims(self, owner: str, claimed_before: datetime) -> int:
        """A restarted dispatcher lets go at once of the alerts it held before it stopped (claims
        older than ``claimed_before``: a live twin with the same name renews its own every second)."""
        with self._tx() as conn:
            result = conn.execute(
                inbox.update()
                .where(inbox.c.owner == owner, inbox.c.status == "pending", inbox.c.claimed_at < claimed_before)
                .values(owner=None, claimed_at=None)
            )
        return int(result.rowcount or 0)

    def redrivable_alerts(
        self, received_before: datetime, stale_before: datetime, limit: int = 200, skip: Collection[str] = ()
    ) -> list[Alert]:
        """Pending alerts to dispatch (again): nobody holds them and they are older than
        ``received_before`` (younger ones are on their way through a dispatch queue), or their
        dispatcher stopped (its claim went stale). ``skip``: ids the caller has queued already
        (not read: a storm's queue holds thousands)."""
        condition = sa.and_(
            inbox.c.status == "pending",
            sa.or_(
                sa.and_(inbox.c.owner.is_(None), inbox.c.received_at < received_before),
                inbox.c.claimed_at < stale_before,
            ),
        )
        with self._read() as conn:
            rows = conn.execute(
                sa.select(inbox.c.id, inbox.c.alert_json).where(condition).order_by(inbox.c.received_at).limit(limit)
            ).all()
        return [Alert.model_validate_json(row.alert_json) for row in rows if row.id not in skip]

    def pending_count(self) -> int:
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(inbox.c.status == "pending")).scalar() or 0)

    def alert_record(self, alert_id: str) -> InboxRecord | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(inbox.c.id, inbox.c.source, inbox.c.status, inbox.c.incident_id, inbox.c.error).where(
                    inbox.c.id == alert_id
                )
            ).first()
        return InboxRecord(row.id, row.source, row.status, row.incident_id, row.error) if row else None

    def alert_status(self, alert_id: str) -> tuple[str, str | None, str | None] | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(inbox.c.status, inbox.c.incident_id, inbox.c.error).where(inbox.c.id == alert_id)
            ).first()
        return (row.status, row.incident_id, row.error) if row else None

    def mark_alert(
        self,
        alert_id: str,
        status: str,
        incident_id: str | None = None,
        error: str | None = None,
        owner: str | None = None,
    ) -> bool:
        """The alert's dispatch ended (``dispatched``), or it waits for the next try (``pending``,
        with the reason in ``error``); either way no dispatcher holds it any more. With ``owner``,
        only while that dispatcher still holds it (a lease taken over is the new holder's to end);
        whether it was marked."""
        values: dict[str, object] = {"status": status, "error": error, "owner": None, "claimed_at": None}
        if incident_id is not None:
            values["incident_id"] = incident_id
        condition = inbox.c.id == alert_id
        if owner is not None:
            condition = sa.and_(condition, inbox.c.owner == owner)
        with self._tx() as conn:
            return bool(conn.execute(inbox.update().where(condition).values(**values)).rowcount)

    def alert_incident(self, alert_id: str) -> str | None:
        """The incident the alert joined (its correlation is done), if any yet."""
        with self._read() as conn:
            value = conn.execute(sa.select(inbox.c.incident_id).where(inbox.c.id == alert_id)).scalar()
        return str(value) if value else None

    def get_alert(self, alert_id: str) -> Alert:
        with self._read() as conn:
            row = conn.execute(sa.select(inbox.c.alert_json).where(inbox.c.id == alert_id)).first()
        if row is None:
            raise KeyError(f"no alert {alert_id}")
        return Alert.model_validate_json(row.alert_json)

    def get_alerts(self, alert_ids: list[str]) -> list[Alert]:
        """These alerts, in one query (500 ids at a time); a missing one is a KeyError."""
        return [Alert.model_validate_json(text) for text in self._alert_json(alert_ids)]

    def alert_documents(self, alert_ids: list[str]) -> list[dict[str, Any]]:
        """These alerts as stored (their JSON documents, not validated again: for copying them
        into evidence, where a storm's thousands of alerts are not worth a model each)."""
        return [json.loads(text) for text in self._alert_json(alert_ids)]

    def _alert_json(self, alert_ids: list[str]) -> list[str]:
        found: dict[str, str] = {}
        for start in range(0, len(alert_ids), 500):
            chunk = alert_ids[start : start + 500]
            with self._read() as conn:
                rows = conn.execute(sa.select(inbox.c.id, inbox.c.alert_json).where(inbox.c.id.in_(chunk))).all()
            found.update((row.id, row.alert_json) for row in rows)
        missing = [alert_id for alert_id in alert_ids if alert_id not in found]
        if missing:
            raise KeyError(f"no alert {missing[0]}")
        return [found[alert_id] for alert_id in alert_ids]


def _inbox_row(alert: Alert, delivery_id: str) -> dict[str, object]:
    return {
        "id": alert.id,
        "source": alert.source,
        "delivery_id": delivery_id,
        "received_at": alert.received_at,
        "raw_sha256": alert.raw_sha256,
        "alert_json": alert.model_dump_json(),
        "status": "pending",
    }
