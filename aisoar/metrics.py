"""Incident metrics: when each incident was detected, acknowledged, contained (verified),
eradicated, recovered and closed, and the durations responders are measured by.

* time to detect (MTTD): from when the source saw it happen (an alert's ``occurred_at``) to the
  first alert's receipt; unknown when no alert says when it happened;
* time to acknowledge (MTTA): from the receipt to the first act of a person (a counted approval
  answer, `aisoar ack`, a regulatory clock recorded, a legal hold);
* time to contain (MTTC): from the receipt to the containment verified at the target;
* time to recover (MTTR): from the receipt to the recovery verified, or to the close when the
  incident had no recovery to do.

Every timestamp comes from the store's record (the timeline, the approvals, the alerts), never
from what a spec says. Money a leaked key burned, read from the gateway's evidence, is the
incident's impact.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aisoar.models import Incident, IncidentStatus
from aisoar.store import Store

MEASURES = ("mttd", "mtta", "mttc", "mttr")
NAMES = {"mttd": "time to detect", "mtta": "time to acknowledge", "mttc": "time to contain", "mttr": "time to recover"}
MILESTONE_KINDS = ("incident", "approval", "clock")


@dataclass
class Milestones:
    incident_id: str
    type: str
    severity: str
    playbooks: list[str]
    status: str
    detected: datetime
    occurred: datetime | None = None
    acknowledged: datetime | None = None
    contained: datetime | None = None
    eradicated: datetime | None = None
    recovered: datetime | None = None
    closed: datetime | None = None
    spend_usd: float | None = None
    ack_by: str | None = None

    def seconds(self) -> dict[str, float | None]:
        def between(start: datetime | None, end: datetime | None) -> float | None:
            return max((end - start).total_seconds(), 0.0) if start and end else None

        return {
            "mttd": between(self.occurred, self.detected),
            "mtta": between(self.detected, self.acknowledged),
            "mttc": between(self.detected, self.contained),
            "mttr": between(self.detected, self.recovered or self.closed),
        }


def _first(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def milestones(store: Store, incident: Incident) -> Milestones:
    """The incident's milestones from its record (its timeline: statuses, containment, clocks,
    acknowledgements; its approvals' counted answers; its alerts' times)."""
    alerts = store.get_alerts(incident.alert_ids)
    found = Milestones(
        incident_id=incident.id,
        type=incident.type.value if incident.type else "unclassified",
        severity=incident.severity.value,
        playbooks=sorted(incident.flow_run_ids),
        status=incident.status.value,
        detected=min((a.received_at for a in alerts), default=incident.created_at),
        occurred=_first(*(a.occurred_at for a in alerts)),
    )
    acks: list[tuple[datetime, str]] = []
    for entry in incident.timeline:
        status = entry.data.get("status")
        if entry.kind == "incident" and status == IncidentStatus.contained.value:
            found.contained = _first(found.contained, entry.at)
        if entry.kind == "incident" and entry.message.startswith("contained (verified)"):
            found.contained = _first(found.contained, entry.at)
        if entry.kind == "incident" and status == IncidentStatus.eradicated.value:
            found.eradicated = _first(found.eradicated, entry.at)
        if entry.kind == "incident" and status == IncidentStatus.recovered.value:
            found.recovered = _first(found.recovered, entry.at)
        if entry.kind == "incident" and status == IncidentStatus.closed.value:
            found.closed = _first(found.closed, entry.at)
        if entry.data.get("ack"):
            acks.append((entry.at, str(entry.data["ack"])))
        if entry.kind == "clock" and entry.data.get("status"):
            acks.append((entry.at, "a regulatory clock's record"))
        if entry.data.get("legal_hold"):
            acks.append((entry.at, f"legal hold by {entry.data['legal_hold'].get('by')}"))
    spent = [
        float(result.output["spend_since_leak_usd"])
        for playbook in found.playbooks
        for result in store.step_results(incident.id, playbook).values()
        if isinstance(result.output.get("spend_since_leak_usd"), (int, float))
    ]
    if spent:
        found.spend_usd = max(spent)  # the key's spend from the leak to the last time it was read
    for record in store.approvals_for(incident.id):
        for answer in record.answers:
            if answer.counted:
                acks.append((answer.at, f"{answer.person or answer.claimed} ({answer.decision} via {answer.channel})"))
    if acks:
        found.acknowledged, found.ack_by = min(acks)
    return found


def all_milestones(store: Store, limit: int = 10_000) -> list[Milestones]:
    ids = store.list_incident_ids(limit)
    return [milestones(store, store.get_incident(i, kinds=MILESTONE_KINDS)) for i in ids]


@dataclass(frozen=True)
class Row:
    group: str
    incidents: int
    means: dict[str, float | None]
    counts: dict[str, int]


def aggregate(found: Iterable[Milestones], by: str) -> list[Row]:
    """Mean of each measure over the incidents that reached it, per ``by`` (type, severity,
    playbook; an incident with two playbooks counts under each)."""
    groups: dict[str, list[Milestones]] = {}
    for item in found:
        keys = (item.playbooks or ["(none)"]) if by == "playbook" else [str(getattr(item, by))]
        for key in keys:
            groups.setdefault(key, []).append(item)
    rows = []
    for group, items in sorted(groups.items()):
        seconds = [i.seconds() for i in items]
        values: dict[str, list[float]] = {m: [v for s in seconds if (v := s[m]) is not None] for m in MEASURES}
        means: dict[str, float | None] = {m: statistics.fmean(v) if v else None for m, v in values.items()}
        rows.append(Row(group, len(items), means, {m: len(v) for m, v in values.items()}))
    return rows


def human(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def table_rows(found: list[Milestones]) -> list[dict[str, Any]]:
    """One row per incident, as the Prefect table artifact shows them."""
    rows = []
    for item in found:
        seconds = item.seconds()
        rows.append(
            {
                "incident": item.incident_id,
                "type": item.type,
                "severity": item.severity,
                "playbooks": ", ".join(item.playbooks),
                "status": item.status,
                **{NAMES[m]: human(seconds[m]) for m in MEASURES},
                "key spend since the leak (USD)": "-" if item.spend_usd is None else f"{item.spend_usd:.2f}",
            }
        )
    return rows


def as_json(found: list[Milestones]) -> str:
    return json.dumps([{"incident": m.incident_id, **m.seconds(), "spend_usd": m.spend_usd} for m in found])
