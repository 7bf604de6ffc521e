"""The case in Jira: one issue per incident (found again by its label), the timeline as
comments, the evidence as remote links, and the issue moved to done when the incident closes.

Every action here is idempotent at Jira itself: the issue by its label, the comments by
the marker line that says how far the timeline was posted, the links by their globalId,
the transition by the issue's status category.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aisoar.actions import Effect
from aisoar.inert import alert_entry, jira_quote, jira_summary, jira_text, plain_text, quoted
from aisoar.models import Incident, TimelineEntry, utcnow
from aisoar.taxonomy import CATALOG
from connectors.jira import ISSUE_KEY, JiraTickets
from connectors.jira import SYSTEM as JIRA
from tasks.base import ActionContext, ProbeResult, StepOutcome, ok, skipped
from tasks.registry import action

PRIORITY = {"critical": "Highest", "high": "High", "medium": "Medium", "low": "Low", "info": "Lowest"}
COMMENT_LIMIT = 30000  # Jira refuses comments over 32767 characters
DESCRIPTION_LIMIT = 30000  # and descriptions
ALERTS_LISTED = 20  # alerts listed in the description; the others are counted
ALERTS_IN_A_ROW = 5  # alerts in a row listed in a timeline comment; the rest of the row counted
LEFT_OUT_ROOM = 200  # kept for the line that says what was left out


class TicketInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    summary: Annotated[str, Field(max_length=1000)] = ""
    details: Annotated[str, Field(max_length=10000)] = ""
    priority: Literal["Highest", "High", "Medium", "Low", "Lowest"] | None = None


class IssueInputs(BaseModel):
    """The incident's issue is found by its label; nothing about it comes from alert data."""

    model_config = ConfigDict(extra="forbid")


class CloseIssueInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transition: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=60,
            pattern=r"^[A-Za-z0-9 _\-]+$",
            description="the transition's name; default: the one into the done status category",
        ),
    ] = None


def incident_label(incident_id: str) -> str:
    return f"aisoar-{incident_id.lower()}"


def find_issue(ctx: ActionContext, jira: JiraTickets | None = None) -> str | None:
    """The incident's issue: as recorded when it was opened (Jira's search index may lag
    behind a new issue), else by its label."""
    recorded = ctx.links().jira_key
    if recorded is not None:
        return recorded
    return (jira or JIRA.client(ctx.settings)).find_by_label(incident_label(ctx.incident_id))


def _probe_issue_open(ctx: ActionContext, inputs: Any, outcome: StepOutcome) -> ProbeResult:
    key = outcome.output.get("issue_key")
    if not isinstance(key, str) or not ISSUE_KEY.match(key):
        return ProbeResult(ok=False, detail="the step recorded no Jira issue to check")
    label = incident_label(ctx.incident_id)
    issue = JIRA.client(ctx.settings).read(key)
    if label not in issue["labels"]:
        return ProbeResult(ok=False, detail=f"Jira issue {key} does not carry the label {label}")
    return ProbeResult(ok=True, detail=f"Jira issue {key} exists ({issue['name']}) with the label {label}")


@action(
    "jira.open_issue",
    effect=Effect.notifies,
    inputs=TicketInputs,
    summary="Open the incident's Jira issue, or find the one already open (changes no affected system)",
    probe=_probe_issue_open,
)
def open_issue(ctx: ActionContext, inputs: TicketInputs) -> StepOutcome:
    jira = JIRA.client(ctx.settings)
    with ctx.store.hold(f"jira-issue:{ctx.incident_id}"):  # two playbooks of one incident open one issue
        return _open_issue(ctx, jira, inputs)


def _open_issue(ctx: ActionContext, jira: JiraTickets, inputs: TicketInputs) -> StepOutcome:
    incident = ctx.store.get_incident(ctx.incident_id)
    label = incident_label(incident.id)
    existing = find_issue(ctx, jira)
    if existing:
        _record(ctx, existing, jira.browse_url(existing), incident)
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
        f"*Alert:* {jira_quote(incident.title)}",
    ]
    if inputs.details:
        lines += ["", jira_text(inputs.details)]
    clocks = ctx.store.clocks_for(incident.id)
    if clocks:
        now = utcnow()
        lines += ["", "*Regulatory deadlines (from awareness; counsel confirms):*"]
        lines += [f"* {jira_text(clock.line(now), 500)}" for clock in clocks]
    lines += ["", "*Timeline so far:*"]
    lines += _timeline_so_far(incident.timeline, DESCRIPTION_LIMIT - sum(len(line) + 1 for line in lines))
    summary = jira_summary(inputs.summary or f"[{incident.severity.value}] {incident.id}: {quoted(incident.title)}")
    key = jira.create_issue(
        summary=summary,
        description="\n".join(lines),
        labels=["aisoar", label],
        priority=inputs.priority or PRIORITY.get(incident.severity.value),
    )
    _record(ctx, key, jira.browse_url(key), incident)
    return ok(f"Jira issue {key} opened", issue_key=key, url=jira.browse_url(key))


def _timeline_so_far(entries: list[TimelineEntry], room: int) -> list[str]:
    """The timeline in the issue's description, within ``room`` characters: the entries in order,
    alerts after the first ``ALERTS_LISTED`` counted rather than listed (a storm's incident has
    thousands), and what was left out said on the last line."""
    lines: list[str] = []
    used = 0
    left_out = alerts_left_out = 0
    alerts = 0
    for entry in entries:
        is_alert = entry.kind == "alert"
        alerts += is_alert
        line = "" if is_alert and alerts > ALERTS_LISTED else _timeline_line(entry)  # counted only
        if not line or used + len(line) + 1 > room - LEFT_OUT_ROOM:
            left_out += 1
            alerts_left_out += is_alert
            continue
        lines.append(line)
        used += len(line) + 1
    if left_out:
        lines.append(
            f"- ... {left_out} more entries not listed here ({alerts_left_out} of them alerts): "
            "the incident's timeline in aisoar has them all"
        )
    return lines


def _timeline_line(entry: TimelineEntry) -> str:
    return f"- {jira_text(entry.step_id or entry.kind)}: {_entry_text(entry.kind, entry.message, 500)}"


def _entry_text(kind: str, message: str, limit: int) -> str:
    """A timeline entry; an alert's entry quotes the alert's title."""
    parts = alert_entry(kind, message)
    if parts is not None:
        return f"{jira_text(parts[0], 200)}: {jira_quote(parts[1], limit)}"
    return jira_text(message, limit)


def _record(ctx: ActionContext, key: str, url: str, incident: Incident) -> None:
    """Note the issue on the timeline once, so Slack updates can link it."""
    if any(e.kind == "notify" and e.data.get("jira_key") == key for e in incident.timeline):
        return
    ctx.store.add_timeline(
        ctx.incident_id, "notify", f"Jira issue {key}", step_id=ctx.step_id, data={"jira_key": key, "jira_url": url}
    )


# -- the timeline as comments -----------------------------------------------------------------
def timeline_comments(incident: Incident, start: int) -> list[tuple[str, int]]:
    """Comment bodies for timeline entries ``start..`` (0-based), each ending with its marker."""
    bodies: list[tuple[str, int]] = []
    lines: list[str] = []
    first = covered = start + 1  # the entries the lines so far cover: first..covered
    for number, line in _comment_lines(incident.timeline[start:], start):
        if lines and sum(len(x) + 1 for x in lines) + len(line) > COMMENT_LIMIT:
            bodies.append((_comment(incident.id, first, covered, lines), covered))
            lines, first = [], covered + 1
        lines.append(line)
        covered = number
    if lines:
        bodies.append((_comment(incident.id, first, covered, lines), covered))
    return bodies


def _comment_lines(entries: list[TimelineEntry], start: int) -> list[tuple[int, str]]:
    """(the number of the last entry a line covers, the line). Alerts in a row after the first
    ``ALERTS_IN_A_ROW`` are one line that counts them: a storm's incident has thousands, which
    the issue would otherwise get as dozens of comments of alert titles."""
    out: list[tuple[int, str]] = []
    row: list[tuple[int, TimelineEntry]] = []  # the run's alerts not listed
    in_a_row = 0

    def counted() -> tuple[int, str]:
        (_, earliest), (last, latest) = row[0], row[-1]
        span = f"{earliest.at:%Y-%m-%d %H:%M:%S} to {latest.at:%H:%M:%S} UTC"
        return last, f"- {span} *alert*: {len(row)} more alerts in a row, not listed here (aisoar's timeline has each)"

    for number, entry in enumerate(entries, start=start + 1):
        in_a_row = in_a_row + 1 if entry.kind == "alert" else 0
        if in_a_row > ALERTS_IN_A_ROW:
            row.append((number, entry))
            continue
        if row:
            out.append(counted())
            row = []
        step = f" {jira_text(entry.step_id)}" if entry.step_id else ""
        what = _entry_text(entry.kind, entry.message, 2000)
        out.append((number, f"- {entry.at.strftime('%Y-%m-%d %H:%M:%S')} UTC *{entry.kind}*{step}: {what}"))
    if row:
        out.append(counted())
    return out


def _comment(incident_id: str, first: int, last: int, lines: list[str]) -> str:
    header = f"*Incident {incident_id} timeline, entries {first}-{last}* (posted by aisoar)"
    # The marker is the last line; alert text cannot forge it (jira_text escapes its hyphens).
    return "\n".join([header, "", *lines, "", f"aisoar-timeline-through: {last}"])


def comment_timeline_for(ctx: ActionContext) -> StepOutcome:
    jira = JIRA.client(ctx.settings)
    key = find_issue(ctx, jira)
    if key is None:
        return skipped("skipped: the incident has no Jira issue to comment on")
    incident = ctx.store.get_incident(ctx.incident_id)
    through = jira.timeline_posted(key)
    bodies = timeline_comments(incident, through)
    if not bodies:
        return ok(f"Jira issue {key} already has the whole timeline", issue_key=key, through=through, posted=0)
    for body, _ in bodies:
        jira.add_comment(key, body)
    last = bodies[-1][1]
    return ok(
        f"timeline entries {through + 1}-{last} commented on Jira issue {key}",
        issue_key=key,
        through=last,
        posted=len(bodies),
    )


def _probe_commented(ctx: ActionContext, inputs: Any, outcome: StepOutcome) -> ProbeResult:
    key = find_issue(ctx)
    if key is None:
        return ProbeResult(ok=False, detail="Jira has no issue labelled for this incident")
    expected = int(outcome.output.get("through", 0))
    through = JIRA.client(ctx.settings).timeline_posted(key)
    return ProbeResult(ok=through >= expected, detail=f"Jira issue {key} comments cover timeline entries 1-{through}")


@action(
    "jira.comment_timeline",
    effect=Effect.notifies,
    inputs=IssueInputs,
    summary="Comment the incident timeline entries not yet on the Jira issue (changes no affected system)",
    probe=_probe_commented,
)
def comment_timeline(ctx: ActionContext, inputs: IssueInputs) -> StepOutcome:
    return comment_timeline_for(ctx)


# -- the evidence as remote links -------------------------------------------------------------
def evidence_global_id(sha256: str) -> str:
    return f"aisoar-evidence:{sha256}"


def link_evidence_for(ctx: ActionContext) -> StepOutcome:
    jira = JIRA.client(ctx.settings)
    key = find_issue(ctx, jira)
    if key is None:
        return skipped("skipped: the incident has no Jira issue to link evidence to")
    items = ctx.store.evidence_for(ctx.incident_id)
    have = {str(link.get("globalId")) for link in jira.remote_links(key)}
    url = ctx.links().report_url
    added = 0
    for item in items:
        if evidence_global_id(item.sha256) in have:
            continue
        jira.link(
            key,
            evidence_global_id(item.sha256),
            url,
            title=plain_text(f"Evidence sha256:{item.sha256[:16]} {item.description}", 255),
            summary=f"sha256 {item.sha256}, {item.size} bytes, collected {item.collected_at.isoformat()} "
            f"by {item.collected_by}",
        )
        added += 1
    if f"aisoar-report:{ctx.incident_id}" not in have:
        jira.link(key, f"aisoar-report:{ctx.incident_id}", url, title=f"Incident report {ctx.incident_id} (Prefect)")
    return ok(
        f"{added} evidence item(s) linked on Jira issue {key} ({len(items)} in all)",
        issue_key=key,
        linked=added,
        evidence=[i.sha256 for i in items],
    )


def _probe_linked(ctx: ActionContext, inputs: Any, outcome: StepOutcome) -> ProbeResult:
    key = find_issue(ctx)
    if key is None:
        return ProbeResult(ok=False, detail="Jira has no issue labelled for this incident")
    have = {str(link.get("globalId")) for link in JIRA.client(ctx.settings).remote_links(key)}
    missing = [s for s in outcome.output.get("evidence", []) if evidence_global_id(str(s)) not in have]
    if missing:
        return ProbeResult(ok=False, detail=f"Jira issue {key} lacks links to {len(missing)} evidence item(s)")
    return ProbeResult(ok=True, detail=f"Jira issue {key} links every evidence item")


@action(
    "jira.link_evidence",
    effect=Effect.notifies,
    inputs=IssueInputs,
    summary="Link the incident's evidence (sha256, description) and report on its Jira issue as remote links "
    "(changes no affected system)",
    probe=_probe_linked,
)
def link_evidence(ctx: ActionContext, inputs: IssueInputs) -> StepOutcome:
    return link_evidence_for(ctx)


# -- closing ------------------------------------------------------------------------------------
def close_issue_for(ctx: ActionContext, transition: str | None = None) -> StepOutcome:
    jira = JIRA.client(ctx.settings)
    key = find_issue(ctx, jira)
    if key is None:
        return skipped("skipped: the incident has no Jira issue to close")
    moved = jira.transition_to_done(key, transition)
    if not moved["transition"]:
        return ok(f"Jira issue {key} was already {moved['to']}", issue_key=key, status=moved["to"], already=True)
    return ok(
        f"Jira issue {key} moved {moved['from']} -> {moved['to']}", issue_key=key, status=moved["to"], already=False
    )


def _probe_done(ctx: ActionContext, inputs: Any, outcome: StepOutcome) -> ProbeResult:
    key = find_issue(ctx)
    if key is None:
        return ProbeResult(ok=False, detail="Jira has no issue labelled for this incident")
    status = JIRA.client(ctx.settings).status(key)
    return ProbeResult(
        ok=status["category"] == "done", detail=f"Jira issue {key} is {status['name']} ({status['category']})"
    )


@action(
    "jira.close_issue",
    effect=Effect.notifies,
    inputs=CloseIssueInputs,
    summary="Move the incident's Jira issue to done (the transition into the done status category, or the one "
    "named) (changes no affected system)",
    probe=_probe_done,
)
def close_issue(ctx: ActionContext, inputs: CloseIssueInputs) -> StepOutcome:
    return close_issue_for(ctx, inputs.transition)


def review_label(incident_id: str) -> str:
    return f"aisoar-review-{incident_id.lower()}"


def action_item_label(incident_id: str) -> str:
    return f"aisoar-action-{incident_id.lower()}"


def open_review_for(ctx: ActionContext, metrics: list[str]) -> str:
    """The post-incident review: a Jira issue with the timeline and the metrics, linked to the
    incident's issue and report; action items carry the label it names, so they link back to
    the incident. Opened once (found by its label afterwards)."""
    jira = JIRA.client(ctx.settings)
    incident = ctx.store.get_incident(ctx.incident_id)
    label = review_label(incident.id)
    existing = jira.find_by_label(label)
    if existing:
        return f"post-incident review {existing} already open"
    issue = find_issue(ctx, jira)
    case = ctx.links(incident)
    lines = [
        f"Post-incident review of AI incident {incident.id} (closed), severity {incident.severity.value}.",
        "",
        f"*Alert:* {jira_quote(incident.title)}",
        f"*Incident issue:* {issue or '-'}",
        f"*Report:* {case.report_url}",
        "",
        "*Metrics:*",
        *(f"* {jira_text(line, 200)}" for line in metrics),
        "",
        "*To review:* what detected it and how fast; what contained it and what did not; what a responder "
        "had to do by hand; what the playbook should do next time.",
        f"*Action items:* open each as an issue labelled {action_item_label(incident.id)} (it then links back "
        "to this incident).",
        "",
        "*Timeline:*",
    ]
    lines += _timeline_so_far(incident.timeline, DESCRIPTION_LIMIT - sum(len(line) + 1 for line in lines))
    key = jira.create_issue(
        summary=jira_summary(f"Post-incident review: {incident.id}: {quoted(incident.title)}"),
        description="\n".join(lines),
        labels=["aisoar", "aisoar-review", label],
        priority=None,
    )
    if issue is not None:
        jira.link(key, f"aisoar-incident-issue:{incident.id}", jira.browse_url(issue), f"Incident issue {issue}")
        jira.link(issue, f"aisoar-review:{incident.id}", jira.browse_url(key), f"Post-incident review {key}")
    jira.link(key, f"aisoar-report:{incident.id}", case.report_url, f"Incident report {incident.id}")
    ctx.store.add_timeline(
        incident.id,
        "notify",
        f"post-incident review opened: Jira {key}",
        step_id=ctx.step_id,
        data={"review_issue": key, "action_item_label": action_item_label(incident.id)},
    )
    return f"post-incident review {key} opened"
