"""Evidence actions that need no external system."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from aisoar.actions import Effect
from tasks.base import ActionContext, StepOutcome, ok
from tasks.registry import action


class NoInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")


@action(
    "evidence.capture_alerts",
    effect=Effect.read_only,
    inputs=NoInputs,
    summary="Preserve every alert of the incident (payload with secrets redacted, original sha256)",
    collects_evidence=True,
)
def capture_alerts(ctx: ActionContext, inputs: NoInputs) -> StepOutcome:
    incident = ctx.store.get_incident(ctx.incident_id)
    hashes = []
    for alert_id in incident.alert_ids:
        alert = ctx.store.get_alert(alert_id)
        record = ctx.evidence.put_json(
            ctx.incident_id,
            alert.model_dump(mode="json"),
            f"alert {alert.id} from {alert.source} (payload sha256 {alert.raw_sha256})",
            ctx.actor,
        )
        hashes.append(record.sha256)
    return ok(f"{len(hashes)} alert(s) preserved", evidence_sha256=hashes)
