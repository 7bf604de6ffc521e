"""Paging on-call through PagerDuty, one PagerDuty alert per incident (dedup key = incident id)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from aisoar.actions import Effect
from connectors.pagerduty import PagerSeverity
from tasks import connect
from tasks.base import ActionContext, StepOutcome, ok
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


@action(
    "pagerduty.page_oncall",
    effect=Effect.read_only,
    inputs=PageInputs,
    summary="Page on-call in PagerDuty: trigger, acknowledge or resolve the incident's alert "
    "(changes no affected system)",
)
def page_oncall(ctx: ActionContext, inputs: PageInputs) -> StepOutcome:
    pager = connect.pagerduty(ctx.settings)
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
