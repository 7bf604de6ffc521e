"""Paging on-call through PagerDuty, one PagerDuty alert per incident (dedup key = incident id)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from aisoar.actions import Effect
from aisoar.inert import plain_text, quoted
from aisoar.models import Incident
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


def trigger(ctx: ActionContext, incident: Incident) -> str:
    """Page on-call for ``incident`` (one PagerDuty alert per incident: its case links' dedup
    key); returns the dedup key PagerDuty answered."""
    return PAGERDUTY.client(ctx.settings).trigger(
        dedup_key=ctx.links(incident).pagerduty_dedup_key,
        summary=f"AI incident {incident.id} ({incident.severity.value}): {quoted(plain_text(incident.title, 300))}",
        source=f"aisoar/{ctx.playbook}",
        severity=SEVERITY[incident.severity.value],
        link=ctx.run_url,
    )


def _probe_accepted(ctx: ActionContext, inputs: PageInputs, outcome: StepOutcome) -> ProbeResult:
    """The Events API has no read-back: the check is that PagerDuty accepted this incident's event."""
    key, expected = outcome.output.get("dedup_key"), ctx.links().pagerduty_dedup_key
    if key != expected:
        return ProbeResult(ok=False, detail=f"PagerDuty answered dedup key {key!r}, not {expected}")
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
    pager = PAGERDUTY.client(ctx.settings)  # not configured: nothing else to look at
    incident = ctx.store.get_incident(ctx.incident_id)
    dedup_key = ctx.links(incident).pagerduty_dedup_key
    if inputs.event == "trigger":
        key = trigger(ctx, incident)
    elif inputs.event == "acknowledge":
        key = pager.acknowledge(dedup_key)
    else:
        key = pager.resolve(dedup_key)
    return ok(f"PagerDuty {inputs.event} sent for {incident.id}", dedup_key=key)
