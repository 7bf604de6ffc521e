"""Evidence actions that need no external system."""

from __future__ import annotations

import json

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
    """Each alert of the incident in a file of its own, unless it is evidence already (an
    earlier run, or the batches that keep the alerts of a storm as they arrive)."""
    total, waiting = ctx.store.alerts_to_preserve(ctx.incident_id)
    hashes = []
    for alert in waiting:
        content = json.dumps(alert.model_dump(mode="json"), sort_keys=True, indent=2, default=str).encode()
        sha256, path = ctx.evidence.write(content)
        record = ctx.store.preserve_alerts(
            [alert.id],
            incident_id=ctx.incident_id,
            sha256=sha256,
            size=len(content),
            description=f"alert {alert.id} from {alert.source} (payload sha256 {alert.raw_sha256})",
            location=str(path),
            collected_by=ctx.actor,
            flow_run_id=ctx.flow_run_id,
        )
        if record is not None:
            hashes.append(record.sha256)
    earlier = total - len(hashes)
    if not hashes:
        return ok(f"all {earlier} alert(s) were preserved before (as they arrived); nothing new", evidence_sha256=[])
    kept = f"; {earlier} more were preserved before (as they arrived)" if earlier else ""
    return ok(f"{len(hashes)} alert(s) preserved{kept}", evidence_sha256=hashes)
