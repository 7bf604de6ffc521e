"""The incident namespace: announcing an incident, and closing it.

**Announce.** The runner tells on-call before any approval gate can be reached. The
announcement is the Slack thread's parent message (every later update replies in its
thread) and, for an incident at least ``AISOAR_PAGE_MIN_SEVERITY`` (high), a PagerDuty page
where PagerDuty is configured. A spec may place the step ``incident.announce`` itself
(after fast reversible containment, say); the validator refuses a gate before it, and the
runner announces first in a spec that has none.

**Close**, only when the playbook's objectives are met (verified at the target): the status
and the resolution come from the recorded outcomes (``aisoar.outcomes``), then the case
systems are told: the Jira issue gets the rest of the timeline and moves to done, the Slack
thread gets a final update. The close is recorded first; a failure in Jira or Slack is
reported on the step and the timeline, never undoes it. The runner publishes the report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from aisoar.actions import Effect
from aisoar.case import report_key
from aisoar.metrics import MEASURES, NAMES, human, milestones
from aisoar.models import IncidentStatus, Severity
from aisoar.outcomes import judge
from connectors.errors import ConnectorError, NotConfigured, Planned
from tasks.base import LINK_KINDS, ActionContext, Outcome, ProbeResult, StepOutcome, ok, refused
from tasks.jira import close_issue_for, comment_timeline_for, link_evidence_for, open_review_for
from tasks.pagerduty import trigger
from tasks.registry import action
from tasks.slack import notify, probe_posted

log = logging.getLogger("aisoar.tell")


class AnnounceInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: Annotated[str, Field(max_length=2000)] = ""


def failed_to_tell(ctx: ActionContext, where: str, exc: Exception) -> str:
    """A failure to tell someone is itself told: on the timeline and in the logs."""
    detail = f"could not tell on-call in {where}: {type(exc).__name__}: {str(exc)[:300]}"
    log.warning("incident %s: %s", ctx.incident_id, detail)
    ctx.store.add_timeline(ctx.incident_id, "error", detail, step_id=ctx.step_id)
    return detail


def announce(ctx: ActionContext, message: str = "") -> dict[str, str]:
    """Tell on-call about the incident once: the Slack parent message (every later ``tell``
    replies in its thread) and, for a severe enough incident, a PagerDuty page. Idempotent:
    an incident already announced is not announced or paged again (its parent is updated).
    Raises ``ConnectorError`` when nobody could be told."""
    incident = ctx.store.get_incident(ctx.incident_id, kinds=LINK_KINDS)  # not a storm's thousand alerts
    result: dict[str, str] = {}
    first = ctx.links(incident).slack is None
    if first:
        posted = notify(ctx, "", reply=False)
        if message:  # a reply: the parent is rewritten with every status change, a reply stays
            notify(ctx, message, reply=True, once=True)
        result["slack"] = f"on-call told in Slack ({posted['channel']})"
    else:
        posted = notify(ctx, message, reply=bool(message), once=True)
        result["slack"] = f"already announced in Slack ({posted['channel']}); parent updated"
    result["slack_channel"] = str(posted["channel"])
    result["slack_ts"] = str(posted["thread_ts"])
    if first and incident.severity.rank >= Severity(ctx.settings.page_min_severity).rank:
        try:
            trigger(ctx, incident)
            result["page"] = f"on-call paged in PagerDuty ({incident.severity.value})"
        except NotConfigured:
            result["page"] = "PagerDuty not configured: nobody paged"
        except Planned as exc:
            result["page"] = str(exc)
        except ConnectorError as exc:
            result["page"] = failed_to_tell(ctx, "PagerDuty", exc)
    return result


@action(
    "incident.announce",
    effect=Effect.notifies,
    inputs=AnnounceInputs,
    summary="Tell on-call about the incident: the Slack message its thread hangs from, and a PagerDuty page "
    "when it is severe enough (the runner does this first unless the spec places it)",
    probe=probe_posted,
)
def announce_incident(ctx: ActionContext, inputs: AnnounceInputs) -> StepOutcome:
    result = announce(ctx, inputs.message)
    told = "; ".join(v for k, v in result.items() if k in {"slack", "page"})
    return ok(told, channel=result["slack_channel"], thread_ts=result["slack_ts"], ts=result["slack_ts"])


# -- close ------------------------------------------------------------------------------


class CloseInputs(BaseModel):
    """Nothing: the resolution is computed from the verified outcomes, never written in a spec."""

    model_config = ConfigDict(extra="forbid")


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
    if ctx.links().slack is None:
        return "Slack: no thread for this incident"
    result = notify(ctx, f"Incident closed: {resolution}", reply=True)
    return f"Slack thread {result['thread_ts']} updated (closed)"


def _probe_closed(ctx: ActionContext, inputs: CloseInputs, outcome: StepOutcome) -> ProbeResult:
    status = ctx.store.get_incident(ctx.incident_id, with_timeline=False).status
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
    review = _follow_up(ctx, "Jira review", lambda: open_review_for(ctx, review_metrics(ctx)))
    slack = _follow_up(ctx, "Slack", lambda: final_slack_update(ctx, f"{resolution}; {review}"))
    return ok(
        f"incident closed: {resolution}; {jira}; {review}; {slack}",
        report_key=report_key(ctx.incident_id),
        jira=jira,
        review=review,
        slack=slack,
        objectives_met=True,
    )


def review_metrics(ctx: ActionContext) -> list[str]:
    """The incident's durations, for its review."""
    found = milestones(ctx.store, ctx.store.get_incident(ctx.incident_id))
    seconds = found.seconds()
    lines = [f"{NAMES[m]}: {human(seconds[m])}" for m in MEASURES]
    if found.spend_usd is not None:
        lines.append(
            f"spend on the key since the leak (the gateway logs, to the evidence before any block): "
            f"USD {found.spend_usd:.2f}"
        )
    return lines


class BranchInputs(BaseModel):
    """What the runner hands a decision step: the value of its expression, its case names."""

    model_config = ConfigDict(extra="forbid")
    value: Annotated[str | None, Field(max_length=200)] = None
    cases: list[str] = Field(min_length=1)
    default: bool = False


@action(
    "incident.branch",
    effect=Effect.read_only,
    inputs=BranchInputs,
    summary="A decision (a spec's `switch` or `if`): which branch of the playbook runs; the steps of the other "
    "branches are skipped as not taken (written as `switch:`/`if:` in a spec, never as `action:`)",
    done_name=lambda outcome: f"Took {outcome.output['case']}" if outcome.output.get("case") else "No branch",
)
def decide(ctx: ActionContext, inputs: BranchInputs) -> StepOutcome:
    value = inputs.value
    shown = "nothing" if value is None else repr(value[:64] + ("…" if len(value) > 64 else ""))
    if value is not None and value in inputs.cases:
        return ok(f"took branch {value}", case=value, value=value)
    if inputs.default:
        return ok(f"took branch default ({shown} names no case)", case="default", value=value)
    return ok(
        f"took no branch: {shown} names none of {', '.join(inputs.cases)}, and there is no default",
        case=None,
        value=value,
    )


class ParallelInputs(BaseModel):
    """What the runner hands a parallel step once the steps it ran have ended: how each one
    ended (its outcome's name), in the spec's order."""

    model_config = ConfigDict(extra="forbid")
    ran: dict[str, Annotated[str, Field(max_length=64)]] = Field(min_length=2)


@action(
    "incident.parallel",
    effect=Effect.read_only,
    inputs=ParallelInputs,
    summary="A parallel step (a spec's `parallel:`): the steps it names ran at the same time; this records "
    "how each ended, and the playbook goes on when all have (written as `parallel:` in a spec, never as `action:`)",
    done_name=lambda outcome: f"Ran {len(outcome.output.get('ran') or {})} at once",
)
def join(ctx: ActionContext, inputs: ParallelInputs) -> StepOutcome:
    lines = ", ".join(f"{step_id} ({how})" for step_id, how in inputs.ran.items())
    return ok(f"ran at the same time: {lines}", ran=dict(inputs.ran))
