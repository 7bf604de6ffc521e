"""Telling on-call: one Slack message per incident, alert text rendered inert."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from aisoar.actions import Effect
from aisoar.inert import slack_text
from aisoar.models import Incident
from aisoar.taxonomy import CATALOG
from tasks import connect
from tasks.base import ActionContext, StepOutcome, ok
from tasks.registry import action

SEVERITY_MARK = {"critical": "🟥", "high": "🟧", "medium": "🟨", "low": "🟦", "info": "⬜"}


class NotifyInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: Annotated[str, Field(max_length=2000)] = ""


def _done_so_far(ctx: ActionContext) -> list[str]:
    done = []
    for entry in ctx.store.get_incident(ctx.incident_id).timeline:
        if entry.kind in {"step", "verify"} and entry.step_id:
            done.append(f"• `{entry.step_id}`: {slack_text(entry.message, 300)}")
    return done[-12:] or ["• nothing yet"]


def incident_blocks(ctx: ActionContext, incident: Incident, message: str) -> list[dict[str, Any]]:
    info = CATALOG.get(incident.type) if incident.type else None
    mark = SEVERITY_MARK.get(incident.severity.value, "")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": f"{mark} AI incident {incident.id} · {incident.severity.value.upper()}",
            },
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "verbatim": True, "text": f"*Alert:* {slack_text(incident.title, 500)}"},
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "verbatim": True, "text": f"*Type:*\n{info.title if info else 'unclassified'}"},
                {"type": "mrkdwn", "verbatim": True, "text": f"*ATLAS:*\n{', '.join(info.atlas) if info else '-'}"},
                {"type": "mrkdwn", "verbatim": True, "text": f"*Playbook:*\n{ctx.playbook}"},
                {"type": "mrkdwn", "verbatim": True, "text": f"*Status:*\n{incident.status.value}"},
            ],
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "verbatim": True, "text": "*What was done:*\n" + "\n".join(_done_so_far(ctx))},
        },
    ]
    if message:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "verbatim": True, "text": slack_text(message)}})
    if ctx.run_url:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"<{ctx.run_url}|Open the playbook run in the Prefect UI> · "
                        "destructive steps wait for approval there",
                    }
                ],
            }
        )
    return blocks


@action(
    "slack.notify_oncall",
    effect=Effect.read_only,
    inputs=NotifyInputs,
    summary="Tell on-call in Slack: severity, what was done, link to the run (changes no affected system)",
)
def notify_oncall(ctx: ActionContext, inputs: NotifyInputs) -> StepOutcome:
    incident = ctx.store.get_incident(ctx.incident_id)
    slack = connect.slack(ctx.settings)
    text = f"AI incident {incident.id} ({incident.severity.value}): {slack_text(incident.title, 200)}"
    posted = slack.post(text=text, blocks=incident_blocks(ctx, incident, inputs.message))
    return ok(f"on-call notified in Slack ({slack.channel})", **posted)
