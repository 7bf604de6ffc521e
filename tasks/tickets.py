"""The case in Jira: one issue per incident (found again by its label)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from aisoar.actions import Effect
from aisoar.inert import jira_summary, jira_text
from aisoar.taxonomy import CATALOG
from tasks import connect
from tasks.base import ActionContext, StepOutcome, ok
from tasks.registry import action

PRIORITY = {"critical": "Highest", "high": "High", "medium": "Medium", "low": "Low", "info": "Lowest"}


class TicketInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    summary: Annotated[str, Field(max_length=1000)] = ""
    details: Annotated[str, Field(max_length=10000)] = ""
    priority: Literal["Highest", "High", "Medium", "Low", "Lowest"] | None = None


def incident_label(incident_id: str) -> str:
    return f"aisoar-{incident_id.lower()}"


@action(
    "jira.open_issue",
    effect=Effect.read_only,
    inputs=TicketInputs,
    summary="Open the incident's Jira issue, or find the one already open (changes no affected system)",
)
def open_issue(ctx: ActionContext, inputs: TicketInputs) -> StepOutcome:
    incident = ctx.store.get_incident(ctx.incident_id)
    jira = connect.jira(ctx.settings)
    label = incident_label(incident.id)
    existing = jira.find_by_label(label)
    if existing:
        return ok(f"Jira issue {existing} already open", issue_key=existing, url=jira.browse_url(existing))
    info = CATALOG.get(incident.type) if incident.type else None
    lines = [
        f"AI incident {incident.id}, severity {incident.severity.value}.",
        "",
        f"*Type:* {info.title if info else 'unclassified'}",
        f"*MITRE ATLAS:* {', '.join(info.atlas) if info else '-'}",
        f"*OWASP LLM:* {', '.join(info.owasp) if info and info.owasp else '-'}",
        f"*Playbook run:* {ctx.run_url or '-'}",
        "",
        "*Alert (verbatim, untrusted):*",
        jira_text(incident.title),
    ]
    if inputs.details:
        lines += ["", jira_text(inputs.details)]
    lines += ["", "*Timeline so far:*"]
    lines += [f"- {jira_text(e.step_id or e.kind)}: {jira_text(e.message, 500)}" for e in incident.timeline]
    summary = jira_summary(inputs.summary or f"[{incident.severity.value}] {incident.id}: {incident.title}")
    key = jira.create_issue(
        summary=summary,
        description="\n".join(lines),
        labels=["aisoar", label],
        priority=inputs.priority or PRIORITY.get(incident.severity.value),
    )
    return ok(f"Jira issue {key} opened", issue_key=key, url=jira.browse_url(key))
