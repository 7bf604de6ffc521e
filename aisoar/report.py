"""The incident report (markdown): what happened, what was done, and the evidence kept."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aisoar.inert import alert_entry, markdown_quote, markdown_text
from aisoar.models import Incident, utcnow
from aisoar.outcomes import Verdict
from aisoar.store import ApprovalRecord, Clock, EvidenceRecord
from aisoar.taxonomy import CATALOG

if TYPE_CHECKING:
    from aisoar.bundles import Signing


def incident_report(
    incident: Incident,
    evidence: list[EvidenceRecord],
    approvals: list[ApprovalRecord],
    run_url: str | None,
    verdicts: list[Verdict] | None = None,
    signing: Signing | None = None,
    clocks: list[Clock] | None = None,
) -> str:
    info = CATALOG.get(incident.type) if incident.type else None
    lines = [
        f"# Incident {incident.id}",
        "",
        f"**Alert:** {markdown_quote(incident.title, 300)}",
        "",
        "| field | value |",
        "|---|---|",
        f"| status | {incident.status.value} |",
        f"| severity | {incident.severity.value} |",
        f"| type | {info.title if info else 'unclassified'} |",
        f"| MITRE ATLAS | {', '.join(info.atlas) if info and info.atlas else '-'} |",
        f"| OWASP LLM | {', '.join(info.owasp) if info and info.owasp else '-'} |",
        f"| opened | {incident.created_at:%Y-%m-%d %H:%M:%S} UTC |",
        f"| alerts | {len(incident.alert_ids)} |",
    ]
    if run_url:
        lines.append(f"| playbook run | [{run_url}]({run_url}) |")
    for judged in verdicts or []:
        lines += _outcome(judged)
    if clocks:
        now = utcnow()
        lines += [
            "",
            "## Regulatory deadlines",
            "",
            "Counted from the time of awareness (the first alert); counsel confirms what applies.",
            "",
            "| regime | duty | due (UTC) | state | why | recorded |",
            "|---|---|---|---|---|---|",
        ]
        for clock in clocks:
            said = f"{clock.decided_by}: {clock.reason}" if clock.decided_by else "-"
            lines.append(
                f"| {markdown_text(clock.regime)} | {markdown_text(clock.what, 300)} | {clock.due_at:%Y-%m-%d %H:%M} "
                f"| {clock.state(now)} | {markdown_text(clock.why, 300)} | {markdown_text(said, 300)} |"
            )
    lines += ["", "## Timeline", "", "| time (UTC) | kind | step | what |", "|---|---|---|---|"]
    for entry in incident.timeline:
        lines.append(
            f"| {entry.at:%H:%M:%S.%f} | {entry.kind} | {markdown_text(entry.step_id or '-')} "
            f"| {_entry_text(entry.kind, entry.message)} |"
        )
    lines += ["", "## Approvals", ""]
    if approvals:
        lines += ["| step | action | decision | by | reason | arguments sha256 |", "|---|---|---|---|---|---|"]
        for approval in approvals:
            lines.append(
                f"| {approval.step_id} | {approval.action} | {approval.status} "
                f"| {markdown_text(approval.decided_by or '-', 100)} | {markdown_text(approval.reason or '-', 300)} "
                f"| `{approval.args_sha256[:16]}` |"
            )
    else:
        lines.append("None.")
    lines += [
        "",
        "## Evidence (chain of custody)",
        "",
        "| sha256 | what | collected by | when (UTC) | where | custody entry |",
        "|---|---|---|---|---|---|",
    ]
    for item in evidence:
        lines.append(
            f"| `{item.sha256}` | {markdown_text(item.description, 300)} | {markdown_text(item.collected_by)} "
            f"| {item.collected_at:%Y-%m-%d %H:%M:%S} | `{item.location}` | `{item.entry_hash[:16]}` |"
        )
    if signing is not None:
        lines += [
            "",
            f"The evidence manifest (every item's sha256, size, custody entry and its place in the incident's "
            f"hash chain) is signed with Ed25519 key **{signing.key_id}**. `aisoar verify {incident.id}` checks "
            f"it here; `aisoar export {incident.id}` writes a bundle that `aisoar verify --bundle FILE` checks "
            "anywhere. The public key:",
            "",
            "```",
            signing.public_key_pem.strip(),
            "```",
        ]
    return "\n".join(lines) + "\n"


def _entry_text(kind: str, message: str) -> str:
    """A timeline entry; an alert's entry quotes the alert's title."""
    parts = alert_entry(kind, message)
    if parts is not None:
        return f"{markdown_text(parts[0], 200)}: {markdown_quote(parts[1], 500)}"
    return markdown_text(message, 500)


def _outcome(verdict: Verdict) -> list[str]:
    """What the playbook achieved (objectives, verified at the target) and what it did NOT do, and why."""
    lines = ["", f"## Outcome of playbook {markdown_text(verdict.playbook)}: {verdict.status.value}", ""]
    if verdict.tracked_only:
        lines.append("This playbook declares no containment objective: **nothing was contained** by it.")
    for objective in verdict.objectives:
        mark = "met" if objective.met else "**NOT met**"
        lines.append(f"- {mark}: {markdown_text(objective.line().split(': ', 1)[1], 600)}")
    lines += ["", "### Not done", ""]
    not_done = [f"- {markdown_text(line, 600)}" for line in verdict.not_done]
    not_done += [f"- {markdown_text(step)}: not run (the run stopped before it)" for step in verdict.not_run]
    lines += not_done or ["Every step did its job."]
    return lines
