"""The evidence ledger: one custody entry per item, each chained to the previous entry of its
incident by its hash (entries written before per-incident chains form the store's one chain)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel

from aisoar.models import Alert, utcnow
from aisoar.store.schema import StoreBase, aware, evidence_items, inbox, incident_alerts


@dataclass(frozen=True)
class EvidenceItem:
    """What is known of an item before its custody entry: its bytes' hash and where they are."""

    sha256: str
    size: int
    media_type: str
    description: str
    location: str
    collected_by: str
    asset: str | None = None
    flow_run_id: str | None = None  # the run whose step collected it


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
    chain: str | None = None  # INCIDENT_CHAIN, or None: the store's one chain (entries before it)
    flow_run_id: str | None = None

    def custody_entry(self) -> dict[str, Any]:
        """What the custody hash covers (``asset``, ``chain`` and ``flow_run_id`` only when set,
        as entries before they existed: moving an entry between chains changes its hash)."""
        entry = self.model_dump(exclude={"prev_hash", "entry_hash"})
        for optional in OPTIONAL_CUSTODY_FIELDS:
            if entry.get(optional) is None:
                entry.pop(optional, None)
        return entry


OPTIONAL_CUSTODY_FIELDS = ("asset", "chain", "flow_run_id")
GENESIS = "0" * 64
INCIDENT_CHAIN = "incident"


def _canonical(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


def custody_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"), default=_canonical)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


class EvidenceLedger(StoreBase):
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
        item = EvidenceItem(sha256, size, media_type, description, location, collected_by, asset)
        return self.record_evidence_items(incident_id, [item])[0]

    def record_evidence_items(self, incident_id: str, items: Sequence[EvidenceItem]) -> list[EvidenceRecord]:
        """Append the custody entries of several items of one incident, in order, in one
        transaction (a step that keeps two documents: one round of the chain's lock and read)."""
        with self._tx() as conn:
            return self._append_custody(conn, incident_id, items)

    def _append_custody(
        self, conn: sa.Connection, incident_id: str, items: Sequence[EvidenceItem]
    ) -> list[EvidenceRecord]:
        """The custody entries, in the caller's transaction, chained to the incident's last entry
        and to each other: the writers of one incident, in every process, append in turn (a fork
        would break the chain); those of different incidents do not wait for each other."""
        self._serialize(conn, f"custody-chain:{incident_id}")
        prev = conn.execute(
            sa.select(evidence_items.c.entry_hash)
            .where(evidence_items.c.incident_id == incident_id, evidence_items.c.chain == INCIDENT_CHAIN)
            .order_by(evidence_items.c.id.desc())
            .limit(1)
        ).scalar()
        prev_hash = str(prev) if prev else GENESIS
        records: list[EvidenceRecord] = []
        for item in items:
            # ``asset`` and ``flow_run_id`` only when set, as in the entries before they existed
            # (the hash covers the keys).
            fields = {
                key: value
                for key, value in asdict(item).items()
                if key not in OPTIONAL_CUSTODY_FIELDS or value is not None
            }
            entry: dict[str, Any] = {
                "incident_id": incident_id,
                **fields,
                "collected_at": utcnow(),
                "chain": INCIDENT_CHAIN,
            }
            entry_hash = custody_hash(prev_hash, entry)
            records.append(EvidenceRecord(**entry, prev_hash=prev_hash, entry_hash=entry_hash))
            prev_hash = entry_hash
        # In chain order (the ledger reads an incident's chain by id).
        conn.execute(evidence_items.insert(), [record.model_dump() for record in records])
        return records

    def preserve_alerts(
        self,
        alert_ids: list[str],
        *,
        incident_id: str,
        sha256: str,
        size: int,
        description: str,
        location: str,
        collected_by: str,
        flow_run_id: str | None = None,
    ) -> EvidenceRecord | None:
        """Mark the alerts preserved and append the custody entry of the file that holds them,
        in one transaction; None (and no entry) when another writer preserved them all first."""
        with self._tx() as conn:
            marked = conn.execute(
                inbox.update().where(inbox.c.id.in_(alert_ids), inbox.c.preserved.is_(False)).values(preserved=True)
            ).rowcount
            if not marked:
                return None
            item = EvidenceItem(
                sha256, size, "application/json", description, location, collected_by, None, flow_run_id
            )
            return self._append_custody(conn, incident_id, [item])[0]

    def alerts_to_preserve(self, incident_id: str) -> tuple[int, list[Alert]]:
        """How many alerts the incident has, and those of them not evidence yet (oldest first),
        in one transaction."""
        joined = sa.select(incident_alerts.c.alert_id).where(incident_alerts.c.incident_id == incident_id)
        with self._read() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(joined.subquery())).scalar()
            rows = conn.execute(
                sa.select(inbox.c.alert_json)
                .where(inbox.c.id.in_(joined), inbox.c.preserved.is_(False))
                .order_by(inbox.c.received_at, inbox.c.id)
            ).all()
        return int(total or 0), [Alert.model_validate_json(row.alert_json) for row in rows]

    def unpreserved_alerts(self, received_before: datetime, limit: int = 500) -> dict[str, list[str]]:
        """Alerts received before ``received_before`` that joined an incident and whose payload
        is not evidence yet, by incident."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(inbox.c.id, inbox.c.incident_id)
                .where(
                    inbox.c.incident_id.is_not(None),
                    inbox.c.preserved.is_(False),
                    inbox.c.received_at < received_before,
                )
                .order_by(inbox.c.received_at)
                .limit(limit)
            ).all()
        found: dict[str, list[str]] = {}
        for row in rows:
            found.setdefault(str(row.incident_id), []).append(str(row.id))
        return found

    def evidence_for(self, incident_id: str, asset: str | None = None) -> list[EvidenceRecord]:
        """The incident's evidence; with ``asset``, only what was collected about that asset."""
        query = sa.select(evidence_items).where(evidence_items.c.incident_id == incident_id)
        if asset is not None:
            query = query.where(evidence_items.c.asset == asset)
        with self._read() as conn:
            rows = conn.execute(query.order_by(evidence_items.c.id)).all()
        return [_evidence(r) for r in rows]

    def verify_custody_chain(self, incident_id: str | None = None) -> list[str]:
        """Recompute every chain (each incident's, and the store's one chain of the entries
        written before per-incident chains), or only ``incident_id``'s entries; returns the
        problems found (empty when intact)."""
        problems: list[str] = []
        last: dict[str | None, str] = {}  # the chain (an incident, or None: the store's) -> its last hash
        with self._read() as conn:
            rows = conn.execute(sa.select(evidence_items).order_by(evidence_items.c.id)).all()
        for row in rows:
            record = _evidence(row)
            if incident_id is not None and record.incident_id != incident_id:
                last[record.incident_id if record.chain == INCIDENT_CHAIN else None] = record.entry_hash
                continue
            entry = record.custody_entry()
            chain = record.incident_id if record.chain == INCIDENT_CHAIN else None
            if record.prev_hash != last.get(chain, GENESIS):
                problems.append(
                    f"custody entry {row.id} ({record.sha256[:12]}…): previous hash does not match the chain"
                )
            if custody_hash(record.prev_hash, entry) != record.entry_hash:
                problems.append(f"custody entry {row.id} ({record.sha256[:12]}…): its hash does not match its content")
            last[chain] = record.entry_hash
        return problems


def _evidence(row: Any) -> EvidenceRecord:
    return EvidenceRecord(
        incident_id=row.incident_id,
        sha256=row.sha256,
        size=row.size,
        media_type=row.media_type,
        description=row.description,
        location=row.location,
        collected_by=row.collected_by,
        collected_at=aware(row.collected_at) or utcnow(),
        asset=row.asset,
        prev_hash=row.prev_hash,
        entry_hash=row.entry_hash,
        chain=row.chain,
        flow_run_id=row.flow_run_id,
    )
