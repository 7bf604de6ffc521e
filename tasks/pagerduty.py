"""Paging on-call through PagerDuty, one PagerDuty alert per incident (dedup key = incident id)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from aisoar.actions import Effect
from connectors.pagerduty import SYSTEM as PAGERDUTY
from connectors.pagerduty import PagerSeverity
from tasks.base import ActionContext, ProbeResult, StepOutcome, ok
from tasks.registry import action

SEVERITY: dict[str, PagerSeverity] = {
    "critical": "critical",
    "high": "error",
    "medium": "warning",
    "low": "info",
    "info": "info",
}


class PageInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: Literal["trigger", "acknowledge", "resolve"] = "trigger"


def _probe_accepted(ctx: ActionContext, inputs: PageInputs, outcome: StepOutcome) -> ProbeResult:
    """The Events API has no read-back: the check is that PagerDuty accepted this incident's event."""
    key = outcome.output.get("dedup_key")
    if key != ctx.incident_id:
        return ProbeResult(ok=False, detail=f"PagerDuty answered dedup key {key!r}, not {ctx.incident_id}")
    detail = f"PagerDuty accepted the {inputs.event} event (dedup key {key}); the Events API has no read-back"
    return ProbeResult(ok=True, detail=detail)


@action(
    "pagerduty.page_oncall",
    effect=Effect.notifies,
    inputs=PageInputs,
    summary="Page on-call in PagerDuty: trigger, acknowledge or resolve the incident's alert "
    "(changes no affected system)",
    probe=_probe_accepted,
)
def page_oncall(ctx: ActionContext, inputs: PageInputs) -> StepOutcome:
    pager = PAGERDUTY.client(ctx.settings)
    incident = ctx.store.get_incident(ctx.incident_id)
    if inputs.event == "trigger":
        key = pager.trigger(
            dedup_key=incident.id,
            summary=f"AI incident {incident.id} ({incident.severity.value}): {incident.title}",
            source=f"aisoar/{ctx.playbook}",
            severity=SEVERITY[incident.severity.value],
            link=ctx.run_url,
        )
    elif inputs.event == "acknowledge":
        key = pager.acknowledge(incident.id)
    else:
        key = pager.resolve(incident.id)
    return ok(f"PagerDuty {inputs.event} sent for {incident.id}", dedup_key=key)
