"""From a persisted alert to running playbooks: correlate, route, launch.

Each step is idempotent, so an alert can be dispatched again after a crash: it joins the
same incident, a playbook already claimed for that incident is not claimed again, and the
launcher dedupes on ``<incident id>:<playbook>``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from aisoar.models import Alert, Severity, utcnow
from aisoar.specs import PlaybookSpec
from aisoar.store import Store

log = logging.getLogger("aisoar.dispatch")


class Launcher(Protocol):
    def launch(self, incident_id: str, playbook: str) -> str:
        """Start (or find) the playbook's run for the incident, record its flow run id on the
        incident's playbook run in the store, and return it."""
        ...

    def redrive(self, incident_id: str, playbook: str) -> bool:
        """Run the playbook's finished run again if it did not contain the incident (a new
        alert for it arrived); return whether it was started again."""
        ...

    def tell(self, incident_id: str, message: str) -> None:
        """Tell the incident's people (its Slack thread, its Jira issue) what a source said."""
        ...


@dataclass
class DispatchResult:
    incident_id: str
    new_incident: bool
    launched: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


class Dispatcher:
    def __init__(self, store: Store, specs: list[PlaybookSpec], launcher: Launcher | None, window: timedelta) -> None:
        self.store = store
        self.specs = specs
        self.launcher = launcher
        self.window = window
        self._lock = threading.Lock()

    def route(self, alert: Alert) -> list[PlaybookSpec]:
        """The playbooks that answer the alert; none match: the fallback (triage) playbooks."""
        matched = [spec for spec in self.specs if not spec.fallback and spec.matches(alert)]
        return matched or [spec for spec in self.specs if spec.fallback]

    def dispatch(self, alert: Alert) -> DispatchResult | None:
        with self._lock:  # one dispatch at a time per process: correlation must not race
            return self._dispatch(alert)

    def _dispatch(self, alert: Alert) -> DispatchResult | None:
        if alert.state == "resolved":
            return self._resolved(alert)
        matched = self.route(alert)
        typed = [spec.incident_type for spec in matched if spec.incident_type is not None]
        incident_type = alert.incident_type or (typed[0] if typed else None)
        severity = max([alert.severity, *(s.severity_floor for s in matched)], key=lambda s: Severity(s).rank)
        incident_id, created = self.store.correlate(alert, incident_type, severity, self.window)
        result = DispatchResult(incident_id=incident_id, new_incident=created)
        self.store.add_timeline(
            incident_id,
            "alert",
            f"alert {alert.id} from {alert.source}: {alert.title}",
            data={"alert_id": alert.id, "raw_sha256": alert.raw_sha256},
        )
        if created:
            self.store.add_timeline(incident_id, "incident", f"incident opened ({severity.value})")
        for note in alert.notes:
            self.store.add_timeline(incident_id, "alert", f"note on alert {alert.id}: {note}")
        if not matched:
            self.store.add_timeline(incident_id, "incident", "no playbook matches this alert; triage by hand")
        elif all(spec.fallback for spec in matched):
            self.store.add_timeline(
                incident_id, "incident", "no playbook answers this alert: the triage playbook tells on-call"
            )
        for spec in matched:
            if self.store.claim_playbook_run(incident_id, spec.name):
                self.store.add_timeline(incident_id, "run", f"playbook {spec.name} selected")
                self._launch(incident_id, spec.name, result)
            elif not created:
                self._redrive(incident_id, spec.name, result)
        self.store.mark_alert(alert.id, "dispatched", incident_id=incident_id)
        return result

    def _resolved(self, alert: Alert) -> DispatchResult | None:
        """The source says its alert is over: on the incident's timeline and in its thread.
        It never starts, stops or re-runs a playbook: containment is judged by its own checks."""
        incident_id = self.store.join_open_incident(alert)
        if incident_id is None:
            self.store.mark_alert(alert.id, "dispatched", error="resolved: no open incident has this fingerprint")
            return None
        message = (  # the alert's title last: a renderer quotes what follows ": " as the alert's text
            f"{alert.source} says alert {alert.id} is resolved (aisoar's containment and its checks are "
            f"unchanged; close the incident when its objectives are met): {alert.title}"
        )
        self.store.add_timeline(incident_id, "alert", message, data={"alert_id": alert.id, "state": "resolved"})
        if self.launcher is not None:
            try:
                self.launcher.tell(incident_id, message)
            except Exception as exc:  # telling is on the timeline either way; the next alert tries again
                log.warning("could not tell %s that its alert is resolved: %s", incident_id, exc)
                self.store.add_timeline(incident_id, "error", f"could not tell on-call the alert is resolved: {exc}")
        self.store.mark_alert(alert.id, "dispatched", incident_id=incident_id)
        return DispatchResult(incident_id=incident_id, new_incident=False)

    def _launch(self, incident_id: str, playbook: str, result: DispatchResult) -> None:
        if self.launcher is None:
            return
        try:
            flow_run_id = self.launcher.launch(incident_id, playbook)
        except Exception as exc:  # the run is retried by retry_unlaunched; the alert is safe in the inbox
            log.warning("could not start playbook %s for %s yet: %s", playbook, incident_id, exc)
            result.failed[playbook] = str(exc)
            return
        result.launched[playbook] = flow_run_id  # the launcher recorded it in the store

    def _redrive(self, incident_id: str, playbook: str, result: DispatchResult) -> None:
        if self.launcher is None:
            return
        try:
            if self.launcher.redrive(incident_id, playbook):
                self.store.add_timeline(
                    incident_id, "run", f"a new alert runs playbook {playbook} again: the incident is not contained"
                )
                flow_run_id = self.store.flow_run_of(incident_id, playbook)
                if flow_run_id:
                    result.launched[playbook] = flow_run_id
        except Exception as exc:  # the alert is on the incident; the next alert tries again
            log.warning("could not run playbook %s again for %s: %s", playbook, incident_id, exc)
            result.failed[playbook] = str(exc)

    def dispatch_pending(self, grace: timedelta = timedelta(0)) -> int:
        """Dispatch alerts still pending in the inbox (after a restart, or a failure).

        ``grace`` leaves alone alerts younger than that, which the ingress is dispatching now.
        """
        count = 0
        for alert in self.store.pending_alerts(received_before=utcnow() - grace):
            try:
                self.dispatch(alert)
                count += 1
            except Exception as exc:
                log.exception("dispatch of alert %s failed; it stays pending", alert.id)
                self.store.mark_alert(alert.id, "pending", error=str(exc)[:500])
        return count

    def retry_unlaunched(self) -> int:
        count = 0
        for incident_id, playbook in self.store.runs_without_flow_run(utcnow() - timedelta(seconds=30)):
            result = DispatchResult(incident_id=incident_id, new_incident=False)
            self._launch(incident_id, playbook, result)
            count += len(result.launched)
        return count
