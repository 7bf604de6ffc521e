"""Escalation on silence: an approval nobody answers climbs its gate's tiers.

A gate declares ``escalation: [{after: 15m, remind: true}, {after: 30m, page: security-manager},
{after: 1h, page: ciso}]``. The runtime's sweep takes each step once it is due, in order and
exactly once across replicas (the store moves the record's level from one value to the next,
and only one caller wins): a reminder goes to the approvers (thread and direct message); a
page goes to the role in PagerDuty, and the role's people may approve from then on (each
gets a code). Every step is on the timeline and in the Slack thread, whether or not the page
went out. When the request expires, the gate's declared default applies (reject, by
default: reversible containment stays, the irreversible step does not run).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from aisoar.inert import plain_text, quoted
from aisoar.models import Incident
from aisoar.specs import Escalation
from aisoar.store import ApprovalRecord
from connectors.errors import NotConfigured, Planned
from connectors.pagerduty import SYSTEM as PAGERDUTY
from flows.answers import AnswerDesk, when, who_may
from flows.services import Services
from flows.tell import tell
from tasks.base import ActionContext
from tasks.incident import failed_to_tell
from tasks.pagerduty import SEVERITY
from tasks.slack import direct_message

log = logging.getLogger("aisoar.escalation")


def escalate_due(svc: Services, desk: AnswerDesk, now: datetime) -> int:
    """Take every escalation step that is due; returns how many were taken here."""
    taken = 0
    for record in svc.store.pending_approvals():
        spec = svc.specs.get(record.playbook)
        step = next((s for s in spec.steps if s.id == record.step_id), None) if spec else None
        gate = step.approval if step else None
        if gate is None or record.opened_at is None or record.expires_at <= now:
            continue
        level = record.escalation_level
        if level >= len(gate.escalation):
            continue
        due = gate.escalation[level]
        if record.opened_at + timedelta(seconds=due.after_seconds) > now:
            continue
        added = svc.approvers.members([due.page]) if due.page else []
        advanced = svc.store.advance_escalation(record.id, level + 1, added)
        if advanced is None:
            continue  # another runtime took it, or an answer came in
        taken += 1
        try:
            _take(svc, desk, advanced, due, level + 1, len(gate.escalation), now)
        except Exception:
            log.exception("escalation step %s of approval %s failed", level + 1, record.id)
    return taken


def _take(
    svc: Services, desk: AnswerDesk, record: ApprovalRecord, due: Escalation, level: int, of: int, now: datetime
) -> None:
    ctx = desk.context(record)
    waited = int((now - (record.opened_at or now)).total_seconds() // 60)
    where = f"escalation {level}/{of}: step {record.step_id} ({record.action}) unanswered for {waited} min"
    if due.remind:
        reached = []
        for person in record.allowed:
            slack_id = svc.approvers.people[person].slack if person in svc.approvers.people else None
            if slack_id is None:
                continue
            try:
                direct_message(
                    ctx,
                    slack_id,
                    f"Reminder: step `{record.step_id}` ({record.action}) of incident {record.incident_id} still "
                    f"waits for your approval; it expires {when(record.expires_at)}. Use the buttons in the "
                    "incident's thread, or the one-time code sent to you earlier.",
                )
                reached.append(person)
            except (NotConfigured, Planned):
                break
            except Exception as exc:
                failed_to_tell(ctx, f"Slack DM to {person}", exc)
        message = f"{where}; reminded {', '.join(reached) or 'nobody by direct message'} and the thread"
        svc.store.add_timeline(record.incident_id, "approval", message, step_id=record.step_id)
        tell(ctx, f"REMINDER ({message}). {who_may(svc.approvers, record)}.")
        return
    role = due.page or ""
    people = svc.approvers.members([role])
    paged = _page(svc, desk, record, role, waited)
    desk.send_codes(record, people, f"You were paged: nobody answered for {waited} min, and you may approve too.")
    names = ", ".join(svc.approvers.label(p) for p in people)
    message = f"{where}; {paged}; {role} ({names}) may approve from now on"
    svc.store.add_timeline(record.incident_id, "approval", message, step_id=record.step_id)
    tell(ctx, f"ESCALATED ({message}).")
    desk.refresh_message(record)


def _page(svc: Services, desk: AnswerDesk, record: ApprovalRecord, role: str, waited: int) -> str:
    """Page ``role`` in PagerDuty; returns what happened, as the timeline says it."""
    incident = svc.store.get_incident(record.incident_id, with_timeline=False)
    ctx = desk.context(record)
    summary = (
        f"[{role}] approval needed: step {record.step_id} ({record.action}) of AI incident {incident.id} "
        f"unanswered for {waited} min: {quoted(plain_text(incident.title, 200))}"
    )
    return page(
        svc, ctx, incident, role, f"{record.incident_id}:{record.id}:{role}", summary, f"aisoar/{record.playbook}"
    )


def page(
    svc: Services, ctx: ActionContext, incident: Incident, who: str, dedup_key: str, summary: str, source: str
) -> str:
    """Page ``who`` in PagerDuty about ``incident`` (the incident of ``ctx``); returns what
    happened, as the timeline says it (a failure to page is itself told)."""
    try:
        PAGERDUTY.client(svc.settings).trigger(
            dedup_key=dedup_key,
            summary=summary,
            source=source,
            severity=SEVERITY[incident.severity.value],
            link=ctx.run_url,
        )
        return f"paged {who} in PagerDuty"
    except NotConfigured:
        return f"could NOT page {who}: PagerDuty is not configured"
    except Planned:
        return f"plan: would page {who} in PagerDuty"
    except Exception as exc:
        return f"could NOT page {who}: " + failed_to_tell(ctx, "PagerDuty", exc)
