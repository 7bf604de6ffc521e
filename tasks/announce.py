"""Announcing an incident: the runner tells on-call before any approval gate can be reached.

The announcement is the Slack thread's parent message (every later update replies in its
thread) and, for an incident at least ``AISOAR_PAGE_MIN_SEVERITY`` (high), a PagerDuty page
where PagerDuty is configured. A spec may place the step ``incident.announce`` itself
(after fast reversible containment, say); the validator refuses a gate before it, and the
runner announces first in a spec that has none.
"""

from __future__ import annotations

import logging
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from aisoar.actions import Effect
from aisoar.models import Severity
from connectors.errors import ConnectorError, NotConfigured, Planned
from tasks import connect
from tasks.base import ActionContext, StepOutcome, ok
from tasks.notify import notify, probe_posted, recorded_thread
from tasks.paging import SEVERITY
from tasks.registry import action

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
    incident = ctx.store.get_incident(ctx.incident_id)
    result: dict[str, str] = {}
    first = recorded_thread(ctx, incident) is None
    if first:
        posted = notify(ctx, "", reply=False)
        if message:  # a reply: the parent is rewritten with every status change, a reply stays
            notify(ctx, message, reply=True)
        result["slack"] = f"on-call told in Slack ({posted['channel']})"
    else:
        posted = notify(ctx, message, reply=bool(message))
        result["slack"] = f"already announced in Slack ({posted['channel']}); parent updated"
    result["slack_channel"] = str(posted["channel"])
    result["slack_ts"] = str(posted["thread_ts"])
    if first and incident.severity.rank >= Severity(ctx.settings.page_min_severity).rank:
        try:
            pager = connect.pagerduty(ctx.settings)
            pager.trigger(
                dedup_key=incident.id,
                summary=f"AI incident {incident.id} ({incident.severity.value}): {incident.title}",
                source=f"aisoar/{ctx.playbook}",
                severity=SEVERITY[incident.severity.value],
                link=ctx.run_url,
            )
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
