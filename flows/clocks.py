"""Regulatory clocks at run time: started when an incident's playbook first runs (from its type,
severity and the assets its alerts name), told in Slack and Jira, reminded before each deadline
and escalated (told, and paged where PagerDuty is configured) when one passes unrecorded. A
responder ends a clock with `aisoar clock INCIDENT KEY --notified/--not-applicable`."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from aisoar.clocks import AssetsError, deadlines_for, duration, entity_refs, load_assets
from aisoar.inert import plain_text, quoted
from aisoar.store import Clock
from flows.escalation import page
from flows.services import Services
from flows.tell import runner_context, tell

log = logging.getLogger("aisoar.clocks")


def start_clocks(svc: Services, incident_id: str, playbook: str, run_id: str | None) -> list[Clock]:
    """Start the incident's clocks not yet running and tell on-call; those started."""
    incident = svc.store.get_incident(incident_id, with_timeline=False)
    alerts = svc.store.get_alerts(incident.alert_ids)
    try:
        assets = load_assets(svc.settings.assets_file)
    except AssetsError as exc:  # a wrong declaration must not stop the containment; it is told
        svc.store.add_timeline(incident_id, "error", f"regulatory clocks NOT started: {exc}")
        tell(runner_context(svc, incident_id, playbook, run_id, "clocks"), f"Regulatory clocks NOT started: {exc}")
        return []
    deadlines = deadlines_for(incident.type, incident.severity, entity_refs(alerts), assets)
    overrides = svc.settings.regulatory_clock_seconds
    started = svc.store.start_clocks(
        incident_id,
        [
            {
                "key": d.key,
                "regime": d.regime,
                "what": d.what,
                "why": d.why,
                "aware_at": incident.created_at,
                "due_at": d.due(incident.created_at, overrides),
            }
            for d in deadlines
        ],
    )
    ctx = runner_context(svc, incident_id, playbook, run_id, "clocks")
    links = ctx.links()
    if started and (links.slack is not None or links.jira_key is not None):
        # Told now where the incident is already told; otherwise its announcement (the Slack
        # thread's first message) and its Jira issue show the deadlines when they come.
        lines = "; ".join(
            f"{c.regime}: {c.what} by {c.due_at:%Y-%m-%d %H:%M} UTC "
            f"({duration((c.due_at - c.aware_at).total_seconds())} from awareness; {c.why})"
            for c in started
        )
        tell(
            ctx,
            f"REGULATORY CLOCKS started (counsel confirms what applies): {lines}. Record each: "
            f"aisoar clock {incident_id} <key> --notified REFERENCE | --not-applicable REASON "
            f"(keys: {', '.join(c.key for c in started)})",
            once=f"clocks@{incident_id}:{','.join(c.key for c in started)}",
        )
    return started


def remind_and_escalate(svc: Services, now: datetime) -> int:
    """Remind each running clock once when its reminder is due, and escalate it once when its
    deadline passed unrecorded; how many were told."""
    told = 0
    for clock in svc.store.claim_clocks(now, "reminded_at", svc.settings.clock_reminder_fraction):
        if now >= clock.due_at:
            continue  # its escalation says it
        left = duration(_round(clock.due_at - now))
        _tell(
            svc, clock, f"REMINDER: {clock.regime}: {clock.what} is due in {left} ({clock.due_at:%Y-%m-%d %H:%M} UTC)"
        )
        told += 1
    for clock in svc.store.claim_clocks(now, "escalated_at"):
        paged = _page(svc, clock)
        _tell(
            svc,
            clock,
            f"ESCALATED: DEADLINE MISSED: {clock.regime}: {clock.what} was due {clock.due_at:%Y-%m-%d %H:%M} UTC and "
            f"nobody recorded it notified or not applicable; {paged}",
        )
        told += 1
    return told


def _round(left: timedelta) -> int:
    seconds = max(int(left.total_seconds()), 0)
    for unit in (86400, 3600, 60):
        if seconds >= unit:
            return seconds // unit * unit
    return seconds


def _tell(svc: Services, clock: Clock, message: str) -> None:
    svc.store.add_timeline(clock.incident_id, "clock", message, data={"clock": clock.key})
    incident = svc.store.get_incident(clock.incident_id, with_timeline=False)
    playbook = next(iter(sorted(incident.flow_run_ids)), "clocks")
    tell(runner_context(svc, clock.incident_id, playbook, incident.flow_run_ids.get(playbook), "clocks"), message)


def _page(svc: Services, clock: Clock) -> str:
    incident = svc.store.get_incident(clock.incident_id, with_timeline=False)
    summary = (
        f"[regulatory deadline missed] {clock.regime}: {clock.what} for AI incident {incident.id}: "
        f"{quoted(plain_text(incident.title, 200))}"
    )
    ctx = runner_context(svc, clock.incident_id, "clocks", None, "clocks")
    return page(svc, ctx, incident, "on-call", f"{clock.incident_id}:clock:{clock.key}", summary, "aisoar/clocks")
