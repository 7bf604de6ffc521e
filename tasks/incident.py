"""Closing an incident: status, and the report as a Prefect markdown artifact."""

from __future__ import annotations

from typing import Annotated

from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field

from aisoar.actions import Effect
from aisoar.models import IncidentStatus
from aisoar.report import incident_report
from tasks.base import ActionContext, StepOutcome, ok
from tasks.registry import action


class CloseInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resolution: Annotated[str, Field(max_length=2000)] = "contained by playbook"


def report_key(incident_id: str) -> str:
    return f"incident-report-{incident_id.lower()}"


@action(
    "incident.close",
    effect=Effect.read_only,
    inputs=CloseInputs,
    summary="Close the incident and publish its report (timeline, approvals, evidence) as an artifact",
    ends_playbook=True,
)
def close_incident(ctx: ActionContext, inputs: CloseInputs) -> StepOutcome:
    ctx.store.add_timeline(ctx.incident_id, "incident", f"closed: {inputs.resolution}", step_id=ctx.step_id)
    ctx.store.set_incident_status(ctx.incident_id, IncidentStatus.closed)
    incident = ctx.store.get_incident(ctx.incident_id)
    markdown = incident_report(
        incident, ctx.store.evidence_for(ctx.incident_id), ctx.store.approvals_for(ctx.incident_id), ctx.run_url
    )
    create_markdown_artifact(
        markdown=markdown, key=report_key(ctx.incident_id), description=f"Incident report {ctx.incident_id}"
    )
    return ok(
        f"incident closed; report published as artifact {report_key(ctx.incident_id)}",
        report_key=report_key(ctx.incident_id),
    )
