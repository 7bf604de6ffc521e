"""Closing an incident, only when the playbook's objectives are met (verified at the target):
the status and the resolution come from the recorded outcomes (``aisoar.outcomes``), then the
case systems are told: the Jira issue gets the rest of the timeline and moves to done, the
Slack thread gets a final update. The close is recorded first; a failure in Jira or Slack is
reported on the step and the timeline, never undoes it. The runner publishes the report.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from aisoar.actions import Effect
from aisoar.models import IncidentStatus
from aisoar.outcomes import judge
from connectors.errors import ConnectorError, NotConfigured, Planned
from tasks.base import ActionContext, Outcome, ProbeResult, StepOutcome, ok, refused
from tasks.notify import notify, recorded_thread
from tasks.registry import action
from tasks.tickets import close_issue_for, comment_timeline_for, link_evidence_for


class CloseInputs(BaseModel):
    """Nothing: the resolution is computed from the verified outcomes, never written in a spec."""

    model_config = ConfigDict(extra="forbid")


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


def _probe_closed(ctx: ActionContext, inputs: CloseInputs, outcome: StepOutcome) -> ProbeResult:
    status = ctx.store.get_incident(ctx.incident_id).status
    if status is not IncidentStatus.closed:
        return ProbeResult(ok=False, detail=f"the incident is {status.value}, not closed")
    return ProbeResult(ok=True, detail="the incident is closed in the aisoar store")


@action(
    "incident.close",
    effect=Effect.notifies,
    inputs=CloseInputs,
    summary="Close the incident when every objective of the playbook is met (verified at the target), with the "
    "resolution computed from those outcomes; move its Jira issue to done and post a final update in its Slack "
    "thread. Refused while an objective is not met: such an incident is never closed automatically",
    probe=_probe_closed,
    ends_playbook=True,
)
def close_incident(ctx: ActionContext, inputs: CloseInputs) -> StepOutcome:
    if ctx.spec is None:
        return refused("refused: the close step runs only inside a playbook (its objectives decide)")
    judged = judge(ctx.store, ctx.spec, ctx.incident_id)
    incident = ctx.store.get_incident(ctx.incident_id)
    if not judged.complete:
        why = "it declares no objectives" if judged.tracked_only else judged.resolution()
        return refused(f"not closed: {why}", objectives_met=False)
    if incident.status is IncidentStatus.not_contained:
        return refused("not closed: another playbook of this incident has not contained it", objectives_met=False)
    resolution = judged.resolution()
    if judged.not_done:
        resolution += "; not done: " + "; ".join(judged.not_done)
    ctx.store.add_timeline(ctx.incident_id, "incident", f"closed: {resolution}", step_id=ctx.step_id)
    ctx.store.set_incident_status(ctx.incident_id, IncidentStatus.closed)
    jira = _follow_up(ctx, "Jira", lambda: close_jira(ctx))
    slack = _follow_up(ctx, "Slack", lambda: final_slack_update(ctx, resolution))
    return ok(
        f"incident closed: {resolution}; {jira}; {slack}",
        report_key=report_key(ctx.incident_id),
        jira=jira,
        slack=slack,
        objectives_met=True,
    )
