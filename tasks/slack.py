"""Telling on-call in Slack: one parent message per incident, later news as threaded replies.

The parent is posted once; where it is (channel id and ts) is recorded on the incident
timeline (kind ``notify``), so every later notification, from any step or playbook, finds
it again: it updates the parent (``chat.update``) with the incident's current status and
replies in its thread. Text is rendered inert (``slack_text``); the alert's own text is also
labelled untrusted and quoted (``slack_quote``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from aisoar.actions import Effect
from aisoar.case import SlackThread
from aisoar.inert import clip, slack_quote, slack_text
from aisoar.models import Incident, utcnow
from aisoar.taxonomy import CATALOG
from connectors.errors import ConnectorError
from connectors.slack import CHANNEL_ID, SlackNotifier
from connectors.slack import SYSTEM as SLACK
from tasks.base import ActionContext, ProbeResult, StepOutcome, ok
from tasks.registry import action

PARENT_EVENT = "aisoar_incident"  # the metadata event type of an incident's first Slack message
PARENT_SENDING = "slack_parent_sending"  # timeline mark: the thread's first message is being posted
REPLY_EVENT = "aisoar_step_reply"  # the metadata event type of a step's reply in the thread
REPLY_SENDING = "slack_reply_sending"  # timeline mark: a step's reply is being posted (its value: the step)
# What a thread update reads of the timeline: the links, steps done, an interrupted first post
# (never a storm's thousands of alert entries).
THREAD_KINDS = ("notify", "step", "verify", "request")
SEVERITY_MARK = {"critical": "🟥", "high": "🟧", "medium": "🟨", "low": "🟦", "info": "⬜"}
SEVERITY_COLOR = {"critical": "#B01E1E", "high": "#E8912D", "medium": "#ECB22E", "low": "#2EB67D", "info": "#8D8D8D"}


class NotifyInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: Annotated[str, Field(max_length=2000)] = ""


class UpdateInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: Annotated[str, Field(min_length=1, max_length=2000)]


def _done_so_far(ctx: ActionContext, incident: Incident) -> list[str]:
    done = []
    for entry in incident.timeline:
        if entry.kind in {"step", "verify"} and entry.step_id:
            done.append(f"• `{entry.step_id}`: {slack_text(entry.message, 300)}")
    return done[-12:] or ["• nothing yet"]


def _links(ctx: ActionContext, incident: Incident) -> list[str]:
    links = []
    case = ctx.links(incident)
    if case.run_url:
        links.append(f"<{case.run_url}|Open the playbook run in the Prefect UI>")
    if case.jira and case.jira.linkable:
        links.append(f"<{case.jira.url}|Jira {slack_text(case.jira.key, 40)}>")
    links.append(f"<{case.report_url}|Incident report>")
    return links


def incident_blocks(ctx: ActionContext, incident: Incident, message: str) -> list[dict[str, Any]]:
    info = CATALOG.get(incident.type) if incident.type else None
    mark = SEVERITY_MARK.get(incident.severity.value, "")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": clip(f"{mark} AI incident {incident.id} · {incident.severity.value.upper()}", 150),
            },
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "verbatim": True, "text": f"*Alert:* {slack_quote(incident.title, 500)}"},
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "verbatim": True, "text": f"*Type:*\n{info.title if info else 'unclassified'}"},
                {"type": "mrkdwn", "verbatim": True, "text": f"*ATLAS:*\n{', '.join(info.atlas) if info else '-'}"},
                {"type": "mrkdwn", "verbatim": True, "text": f"*Playbook:*\n{slack_text(ctx.playbook, 100)}"},
                {"type": "mrkdwn", "verbatim": True, "text": f"*Status:*\n{incident.status.value}"},
            ],
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "verbatim": True,
                "text": clip("*What was done:*\n" + "\n".join(_done_so_far(ctx, incident)), 3000),
            },
        },
    ]
    clocks = ctx.store.clocks_for(incident.id)
    if clocks:
        now = utcnow()
        text = "*Regulatory deadlines:*\n" + "\n".join(f"• {slack_text(c.line(now), 400)}" for c in clocks)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "verbatim": True, "text": clip(text, 3000)}})
    if message:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "verbatim": True, "text": slack_text(message)}})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": " · ".join(_links(ctx, incident)) + " · destructive steps wait for approval there",
                }
            ],
        }
    )
    return blocks


def severity_attachment(incident: Incident) -> list[dict[str, Any]]:
    """The colour bar: severity and status, in the severity's colour."""
    severity = incident.severity.value
    line = f"*Severity:* {severity.upper()} · *Status:* {incident.status.value}"
    return [
        {
            "color": SEVERITY_COLOR.get(severity, "#8D8D8D"),
            "fallback": f"{severity} incident {incident.id}: {incident.status.value}",
            "blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": line}]}],
        }
    ]


def _parent_text(incident: Incident) -> str:
    return (
        f"AI incident {incident.id} ({incident.severity.value}, {incident.status.value}): "
        f"{slack_quote(incident.title, 200)}"
    )


def reply_blocks(ctx: ActionContext, incident: Incident, message: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "verbatim": True, "text": slack_text(message)}},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"*Status:* {incident.status.value} · step `{slack_text(ctx.step_id, 64)}` · "
                    + " · ".join(_links(ctx, incident)),
                }
            ],
        },
    ]
    return blocks


def _left_by_an_interrupted_post(ctx: ActionContext, slack: SlackNotifier, incident: Incident) -> SlackThread | None:
    """The thread's first message, when an earlier attempt posted it and stopped (killed) before
    recording it: found in the channel by its metadata, so the thread is not started twice."""
    marks = [e for e in incident.timeline if e.kind == "request" and e.data.get(PARENT_SENDING)]
    if not marks:
        return None
    channel = slack.channel if CHANNEL_ID.match(slack.channel) else ctx.store.slack_channel_id(slack.channel)
    if channel is None:
        ctx.store.add_timeline(
            ctx.incident_id,
            "error",
            f"an earlier attempt may have started the Slack thread and stopped before recording it; the id of "
            f"channel {slack.channel} is not known here to look for it (set AISOAR_SLACK_CHANNEL to the channel's "
            "id): a second thread may follow",
            step_id=ctx.step_id,
        )
        return None
    ts = slack.find_posted(channel, PARENT_EVENT, {"incident_id": incident.id}, marks[0].at.timestamp() - 60)
    if ts is None:
        return None
    ctx.store.add_timeline(
        ctx.incident_id,
        "notify",
        f"Slack thread found in channel {channel}: started by an earlier attempt that stopped before recording it",
        step_id=ctx.step_id,
        data={"slack_channel": channel, "slack_ts": ts, "slack_channel_name": slack.channel},
    )
    return SlackThread(channel, ts)


def notify(ctx: ActionContext, message: str, *, reply: bool, once: bool | str = False) -> dict[str, Any]:
    """Post the parent (first time) or update it and reply in its thread.

    ``reply``: also reply when the parent already exists (a notification always does;
    the first notification includes its message in the parent instead). Two playbooks
    of one incident notifying at the same moment in one process are serialised, so they
    share one parent. ``once``: the reply is this step's (a step run again after it was
    killed between Slack's answer and the record finds its reply instead of posting another);
    a string names the reply instead of the step (a line the runner says once per run, which
    two executions of one run, or one run again after a takeover, must not both post).
    """
    slack: SlackNotifier = SLACK.client(ctx.settings)
    with ctx.store.hold(f"slack-thread:{ctx.incident_id}"):
        return _notify(ctx, slack, message, reply, once)


def _reply_left_by_an_interrupted_post(
    ctx: ActionContext, slack: SlackNotifier, incident: Incident, thread: SlackThread, key: str
) -> str | None:
    """This step's reply, when an earlier attempt posted it and stopped before recording it."""
    marks = [e for e in incident.timeline if e.kind == "request" and e.data.get(REPLY_SENDING) == key]
    if not marks:
        return None
    ts = slack.find_reply(thread.channel, thread.ts, REPLY_EVENT, {"incident_id": incident.id, "step": key})
    if ts is not None:
        ctx.store.add_timeline(
            ctx.incident_id,
            "notify",
            f"Slack reply of step {ctx.step_id} found in the thread: posted by an earlier attempt (not posted twice)",
            step_id=ctx.step_id,
        )
    return ts


def _notify(
    ctx: ActionContext, slack: SlackNotifier, message: str, reply: bool, once: bool | str = False
) -> dict[str, Any]:
    incident = ctx.store.get_incident(ctx.incident_id, kinds=THREAD_KINDS)
    thread = ctx.links(incident).slack or _left_by_an_interrupted_post(ctx, slack, incident)
    if thread is not None:
        try:
            slack.update(
                thread.channel,
                thread.ts,
                text=_parent_text(incident),
                blocks=incident_blocks(ctx, incident, ""),
                attachments=severity_attachment(incident),
            )
        except ConnectorError as exc:
            if exc.detail not in {"message_not_found", "channel_not_found"}:
                raise
            thread = None  # someone deleted the parent: start the thread again
    if thread is None:
        ctx.store.add_timeline(  # before the post: a run stopped right after it looks for it
            ctx.incident_id,
            "request",
            "sending: the first message of the incident's Slack thread",
            step_id=ctx.step_id,
            data={PARENT_SENDING: True, "channel": slack.channel},
        )
        posted = slack.post(
            text=_parent_text(incident),
            blocks=incident_blocks(ctx, incident, message),
            attachments=severity_attachment(incident),
            metadata={"event_type": PARENT_EVENT, "event_payload": {"incident_id": incident.id}},
        )
        ctx.store.add_timeline(
            ctx.incident_id,
            "notify",
            f"Slack thread started in channel {posted['channel']}",
            step_id=ctx.step_id,
            data={"slack_channel": posted["channel"], "slack_ts": posted["ts"], "slack_channel_name": slack.channel},
        )
        return {"channel": posted["channel"], "ts": posted["ts"], "thread_ts": posted["ts"], "new_thread": True}
    result: dict[str, Any] = {"channel": thread.channel, "thread_ts": thread.ts, "new_thread": False}
    if reply:
        key = once if isinstance(once, str) else f"{ctx.playbook}/{ctx.step_id}"
        found = _reply_left_by_an_interrupted_post(ctx, slack, incident, thread, key) if once else None
        if found is not None:
            result["ts"] = found
            result["found"] = True
            return result
        if once:  # before the post: a run stopped right after it looks for the reply
            ctx.store.add_timeline(
                ctx.incident_id,
                "request",
                f"sending: a reply of step {ctx.step_id} in the incident's Slack thread",
                step_id=ctx.step_id,
                data={REPLY_SENDING: key},
            )
        text = message or f"Incident {incident.id} is now {incident.status.value}"
        posted = slack.post(
            text=slack_text(text, 300),
            blocks=reply_blocks(ctx, incident, text),
            thread_ts=thread.ts,
            channel=thread.channel,
            metadata={"event_type": REPLY_EVENT, "event_payload": {"incident_id": incident.id, "step": key}}
            if once
            else None,
        )
        result["ts"] = posted["ts"]
    else:
        result["ts"] = thread.ts
    return result


def probe_posted(ctx: ActionContext, inputs: Any, outcome: StepOutcome) -> ProbeResult:
    channel, thread_ts, ts = (outcome.output.get(k) for k in ("channel", "thread_ts", "ts"))
    if not (isinstance(channel, str) and isinstance(thread_ts, str) and isinstance(ts, str)):
        return ProbeResult(ok=False, detail="the step recorded no Slack message to check")
    messages = SLACK.client(ctx.settings).thread(channel, thread_ts)
    if not messages:
        return ProbeResult(ok=False, detail=f"Slack has no thread {thread_ts} in {channel}")
    if not any(m.get("ts") == ts for m in messages):
        return ProbeResult(ok=False, detail=f"Slack thread {thread_ts} in {channel} has no message {ts}")
    status = ctx.store.get_incident(ctx.incident_id, with_timeline=False).status.value
    blocks = messages[0].get("blocks")
    fields = [
        field.get("text")
        for block in (blocks if isinstance(blocks, list) else [])
        if isinstance(block, dict)
        for field in block.get("fields", [])
        if isinstance(field, dict)
    ]
    if f"*Status:*\n{status}" not in fields:
        return ProbeResult(ok=False, detail=f"the Slack parent message does not show the status {status}")
    return ProbeResult(ok=True, detail=f"Slack shows message {ts} in thread {thread_ts} ({channel}), status {status}")


@action(
    "slack.notify_oncall",
    effect=Effect.notifies,
    inputs=NotifyInputs,
    summary="Tell on-call in Slack: one message per incident (severity colour, what was done, links); "
    "later calls update it and reply in its thread (changes no affected system)",
    probe=probe_posted,
)
def notify_oncall(ctx: ActionContext, inputs: NotifyInputs) -> StepOutcome:
    result = notify(ctx, inputs.message, reply=True, once=True)
    if result["new_thread"]:
        return ok(f"on-call notified in Slack ({result['channel']})", **result)
    return ok(f"Slack thread updated and replied to ({result['channel']})", **result)


@action(
    "slack.post_update",
    effect=Effect.notifies,
    inputs=UpdateInputs,
    summary="Post an update in the incident's Slack thread and refresh the parent's status "
    "(changes no affected system)",
    probe=probe_posted,
)
def post_update(ctx: ActionContext, inputs: UpdateInputs) -> StepOutcome:
    result = notify(ctx, inputs.message, reply=True, once=True)
    return ok(f"update posted in the incident's Slack thread ({result['channel']})", **result)


# -- approvals: the request with its buttons, its updates, codes by DM, refusals ------------
APPROVE_ACTION = "aisoar_approve"
REJECT_ACTION = "aisoar_reject"


def approval_blocks(lines: list[str], approval_id: str, buttons: bool, footer: str) -> list[dict[str, Any]]:
    """The approval request in the incident's thread: what, to which asset, who, until when;
    Approve / Reject buttons while it is open (Slack signs each click with the clicker's id)."""
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "block_id": f"approval-request:{approval_id}",
            "text": {"type": "mrkdwn", "verbatim": True, "text": clip("\n".join(lines), 3000)},
        }
    ]
    if buttons:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"approval:{approval_id}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE_ACTION,
                        "text": {"type": "plain_text", "text": "Approve"},
                        "style": "primary",
                        "value": approval_id,
                        "confirm": {
                            "title": {"type": "plain_text", "text": "Approve this action?"},
                            "text": {"type": "mrkdwn", "text": "It runs as soon as the quorum is met."},
                            "confirm": {"type": "plain_text", "text": "Approve"},
                            "deny": {"type": "plain_text", "text": "Cancel"},
                        },
                    },
                    {
                        "type": "button",
                        "action_id": REJECT_ACTION,
                        "text": {"type": "plain_text", "text": "Reject"},
                        "style": "danger",
                        "value": approval_id,
                    },
                ],
            }
        )
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(footer, 3000)}]})
    return blocks


def post_approval_request(
    ctx: ActionContext, text: str, lines: list[str], approval_id: str, footer: str
) -> dict[str, str]:
    """Reply in the incident's thread (starting it if needed) with the request and its buttons."""
    slack: SlackNotifier = SLACK.client(ctx.settings)
    with ctx.store.hold(f"slack-thread:{ctx.incident_id}"):
        thread = ctx.links().slack
        if thread is None:
            started = _notify(ctx, slack, "", reply=False)
            channel, thread_ts = started["channel"], started["thread_ts"]
        else:
            channel, thread_ts = thread.channel, thread.ts
    return slack.post(
        text=slack_text(text, 300),
        blocks=approval_blocks(lines, approval_id, True, footer),
        thread_ts=thread_ts,
        channel=channel,
    )


def update_approval_request(
    ctx: ActionContext, channel: str, ts: str, text: str, lines: list[str], approval_id: str, open_: bool, footer: str
) -> None:
    SLACK.client(ctx.settings).update(
        channel, ts, text=slack_text(text, 300), blocks=approval_blocks(lines, approval_id, open_, footer)
    )


def direct_message(ctx: ActionContext, user: str, text: str) -> None:
    """A direct message to one person (their one-time code, a reminder)."""
    slack: SlackNotifier = SLACK.client(ctx.settings)
    channel = slack.open_dm(user)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": clip(text, 3000)}}]
    slack.post(text=text, blocks=blocks, channel=channel)


def ephemeral(ctx: ActionContext, channel: str, user: str, text: str, thread_ts: str | None = None) -> None:
    SLACK.client(ctx.settings).post_ephemeral(channel, user, text, thread_ts)
