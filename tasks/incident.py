"""Closing an incident: status, the report as a Prefect markdown artifact, then the case
systems told: the Jira issue gets the rest of the timeline and moves to done, the Slack
thread gets a final update. The close is recorded first; a failure in Jira or Slack is
reported on the step and the timeline, never undoes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field

from aisoar.actions import Effect
from aisoar.models import IncidentStatus
from aisoar.report import incident_report
from connectors.errors import ConnectorError, NotConfigured, Planned
from tasks.base import ActionContext, Outcome, StepOutcome, ok
from tasks.notify import notify, recorded_thread
from tasks.registry import action
from tasks.tickets import close_issue_for, comment_timeline_for, link_evidence_for


class CloseInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resolution: Annotated[str, Field(max_length=2000)] = "contained by playbook"


def report_key(incident_id: str) -> str:
    return f"incident-report-{incident_id.lower()}"


def _follow_up(ctx: ActionContext, what: str, run: Callable[[], str]) -> str:
    """Run one after-close notification; its failure is told, not raised."""
    try:
        return run()
    except NotConfigured as exc:
        return f"{what}: not configured ({exc.system})"
    except Planned as exc:
        return f"{what}: {exc}"
    except (ConnectorError, ValueError) as exc:
        ctx.store.add_timeline(ctx.incident_id, "error", f"{what} failed after the close: {exc}", step_id=ctx.step_id)
        return f"{what} failed: {exc}"
    except Exception as exc:  # the close is recorded: an unexpected failure is told, not raised
        detail = f"{type(exc).__name__}: {str(exc)[:300]}"
        ctx.store.add_timeline(
            ctx.incident_id, "error", f"{what} failed after the close: {detail}", step_id=ctx.step_id
        )
        return f"{what} failed: {detail}"


def close_jira(ctx: ActionContext) -> str:
    commented = comment_timeline_for(ctx)
    if commented.status is Outcome.skipped:
        return "Jira: no issue for this incident"
    link_evidence_for(ctx)
    return close_issue_for(ctx).summary


def final_slack_update(ctx: ActionContext, resolution: str) -> str:
    if recorded_thread(ctx) is None:
        return "Slack: no thread for this incident"
    result = notify(ctx, f"Incident closed: {resolution}", reply=True)
    return f"Slack thread {result['thread_ts']} updated (closed)"


@action(
    "incident.close",
    effect=Effect.read_only,
    inputs=CloseInputs,
    summary="Close the incident and publish its report (timeline, approvals, evidence) as an artifact; "
    "move its Jira issue to done and post a final update in its Slack thread",
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
    jira = _follow_up(ctx, "Jira", lambda: close_jira(ctx))
    slack = _follow_up(ctx, "Slack", lambda: final_slack_update(ctx, inputs.resolution))
    return ok(
        f"incident closed; report published as artifact {report_key(ctx.incident_id)}; {jira}; {slack}",
        report_key=report_key(ctx.incident_id),
        jira=jira,
        slack=slack,
    )
