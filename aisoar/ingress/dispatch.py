"""From a persisted alert to running playbooks: correlate, route, launch.

Many dispatches run at once, in one process and across replicas sharing the store; what
keeps them apart is the store, not a lock of this process:
* an alert is leased to one dispatcher at a time (``claim_alert``); a lease whose holder
  stopped goes stale and another dispatcher takes the alert over;
* correlation holds the fingerprint for its transaction (one incident per fingerprint);
* a playbook is claimed for an incident once (the table's key), and the launcher dedupes
  the run on ``<incident id>:<playbook>``.
Each step is idempotent, so an alert can be dispatched again after a crash or a failed
launch: it keeps the incident it joined (its timeline entries are not written twice), and
a playbook selected but never started is started. An alert stays ``pending`` until every
run it selected exists.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol, runtime_checkable

from aisoar.models import Alert, Severity, utcnow
from aisoar.specs import PlaybookSpec, Routing, route
from aisoar.store import Store
from aisoar.store.incidents import Note

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


@runtime_checkable
class Leading(Protocol):
    """A launcher whose launch comes in two halves, so a dispatcher can hand the second (asking
    Prefect for the run) to threads of its own and contain the next alert at once."""

    owner: str  # the name it holds runs under in the store

    def lead(self, incident_id: str, playbook: str, taken: bool = False) -> bool:
        """Take the playbook's run for the incident and run its head start; whether this
        launcher holds the run. ``taken``: the dispatcher's claim of the run took it for this
        launcher already."""
        ...

    def create(self, incident_id: str, playbook: str, held: bool, yielding: bool = False) -> str:
        """Create (or find) the run, record and return its flow run id (as ``launch``);
        ``yielding``: after the head starts under way."""
        ...


@dataclass
class DispatchResult:
    incident_id: str
    new_incident: bool
    launched: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


class Dispatcher:
    def __init__(
        self,
        store: Store,
        specs: list[PlaybookSpec],
        launcher: Launcher | None,
        window: timedelta,
        *,
        owner: str | None = None,
        lease: timedelta = timedelta(seconds=8),
    ) -> None:
        self.store = store
        self.specs = specs
        self.launcher = launcher
        self.window = window
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.lease = lease  # a claim on an alert older than this is taken over (refresh_claims renews it)
        # Where the runs' creation goes once the head starts are done (DispatchPool: threads of
        # its own); None: created here, before dispatch returns.
        self.defer: Callable[[Callable[[], None]], object] | None = None

    def route(self, alert: Alert) -> list[PlaybookSpec]:
        """The playbooks that answer the alert (aisoar.specs.route)."""
        return route(self.specs, alert).specs

    def dispatch(self, alert: Alert) -> DispatchResult | None:
        """Dispatch the alert unless it is done or another dispatcher holds it now (None then)."""
        claim = self.store.claim_alert(alert.id, self.owner, utcnow() - self.lease)
        if claim is None:
            return None
        try:
            return self._dispatch(alert, claim.incident_id)
        except Exception as exc:
            self.store.mark_alert(
                alert.id, "pending", error=f"dispatch failed, retried: {str(exc)[:400]}", owner=self.owner
            )
            raise

    def _dispatch(self, alert: Alert, incident_id: str | None) -> DispatchResult | None:
        """``incident_id``: the incident the alert joined on an earlier try (its claim says)."""
        if alert.state == "resolved":
            return self._resolved(alert)
        routing = route(self.specs, alert)
        matched = routing.specs
        again, created = incident_id is not None, False
        if incident_id is None:
            incident_id, created = self._correlate(alert, routing)
        result = DispatchResult(incident_id=incident_id, new_incident=created)
        # Read once: a pool stopping meanwhile must not leave a run led here and never created.
        defer, launcher = self.defer, self.launcher
        leading = launcher if defer is not None and isinstance(launcher, Leading) else None
        led: list[tuple[str, bool]] = []  # runs whose head start is done and whose creation is left
        # A new run is claimed already held by the launcher that leads it: one transaction less
        # between the alert and its containment.
        holder = leading.owner if leading is not None else None
        for spec in matched:
            note = f"playbook {spec.name} selected"
            if self.store.claim_playbook_run(incident_id, spec.name, note=note, owner=holder):
                self._launch(incident_id, spec.name, result, led if leading else None, taken=holder is not None)
                continue
            found = self.store.playbook_run_state(incident_id, spec.name)
            if found is not None and found[0] is None and again:
                # This alert selected it on an earlier try whose launch failed. (An alert that only
                # joins while another one's launch is under way leaves the launch to that one: a
                # storm would otherwise ask Prefect for the same run a thousand times.)
                self._launch(incident_id, spec.name, result, led if leading else None)
            elif found is not None and found[0] is not None and not created:
                self._redrive(incident_id, spec.name, result, ended=found[1])  # did it contain the incident?
        if led and defer is not None and leading is not None:
            # Contained already (the head starts ran): the runs are created on other threads once
            # the burst's head starts are done, and the alert, still held by this dispatcher, is
            # marked when they exist. (A pool already stopped refuses: the alert stays pending.)
            defer(lambda: self._create_then_mark(leading, alert, result, led))
            return result
        self._mark(alert, result)
        return result

    def _create_then_mark(
        self, launcher: Leading, alert: Alert, result: DispatchResult, led: list[tuple[str, bool]]
    ) -> None:
        try:
            for playbook, held in led:
                try:
                    result.launched[playbook] = launcher.create(result.incident_id, playbook, held, yielding=True)
                except Exception as exc:  # retried as a launch is; the alert is safe in the inbox
                    log.warning("could not create the run of %s for %s yet: %s", playbook, result.incident_id, exc)
                    result.failed[playbook] = str(exc)
            self._mark(alert, result)
        except Exception:  # the alert stays pending; its lease lapses and it is dispatched again
            log.exception("the runs of alert %s could not be recorded; it stays in the inbox", alert.id)

    def _mark(self, alert: Alert, result: DispatchResult) -> None:
        if result.failed:
            waiting = "; ".join(f"{name}: {error}" for name, error in result.failed.items())
            self.store.mark_alert(
                alert.id, "pending", error=f"waiting to start its runs ({waiting})"[:500], owner=self.owner
            )
        else:
            self.store.mark_alert(alert.id, "dispatched", owner=self.owner)

    def dispatch_together(self, alerts: list[Alert]) -> list[Alert]:
        """Dispatch alerts taken from a queue together; the ones dispatched here.

        A storm's alerts (one fingerprint, selecting the same playbooks) are not dispatched one
        by one: the first is, in full (correlation, its runs started or run again), and the
        rest then join its incident in one transaction, as each would have one by one a moment
        later, without starting runs. A failure is logged; the alert waits in the inbox."""
        groups: dict[tuple[str, ...], list[Alert]] = {}
        for alert in alerts:
            key = (alert.id,) if alert.state == "resolved" else (alert.fingerprint, *self._routing(alert))
            groups.setdefault(key, []).append(alert)
        done: list[Alert] = []
        for group in groups.values():
            leader: DispatchResult | None = None
            while group and leader is None:
                alert = group.pop(0)
                if (leader := self._dispatch_logged(alert)) is not None:
                    done.append(alert)
            if leader is None or not group:
                continue
            try:
                joined = set(self._join(leader.incident_id, group))
            except Exception:
                log.exception("%d alerts could not join %s at once; one by one", len(group), leader.incident_id)
                joined = set()
            for alert in group:
                if alert.id in joined:
                    done.append(alert)
                elif self._dispatch_logged(alert) is not None:  # held elsewhere, or attached earlier
                    done.append(alert)
        return done

    def _routing(self, alert: Alert) -> list[str]:
        return [spec.name for spec in self.route(alert)]

    def _dispatch_logged(self, alert: Alert) -> DispatchResult | None:
        try:
            return self.dispatch(alert)
        except Exception:
            log.exception("dispatch of %s failed; it stays in the inbox and is retried", alert.id)
            return None

    def _join(self, incident_id: str, alerts: list[Alert]) -> list[str]:
        matched = self.route(alerts[0])
        severity = max(
            [*(a.severity for a in alerts), *(s.severity_floor for s in matched)], key=lambda s: Severity(s).rank
        )
        return self.store.join_incident(
            incident_id,
            alerts[0].fingerprint,
            [(alert.id, _entries(alert)) for alert in alerts],
            Severity(severity),
            self.window,
            utcnow() - self.lease,
        )

    def _correlate(self, alert: Alert, routing: Routing) -> tuple[str, bool]:
        """The incident the alert joins or opens, with its timeline entries written with it."""
        matched = routing.specs
        typed = [spec for spec in matched if spec.incident_type is not None]
        incident_type = alert.incident_type or (typed[0].incident_type if typed else None)
        severity = max([alert.severity, *(s.severity_floor for s in matched)], key=lambda s: Severity(s).rank)
        entries = _entries(alert)
        opened: list[Note] = [("incident", f"incident opened ({severity.value})", None)]
        if alert.incident_type is None and typed and incident_type is not None:
            opened.append(
                (
                    "incident",
                    f"incident type {incident_type.value} inferred: the alert names none, and "
                    f"playbook {typed[0].name} answers it",
                    None,
                )
            )
        note = routing.note(alert)
        if note is not None:
            opened.append(("incident", note, None))
        return self.store.correlate(alert, incident_type, severity, self.window, entries, opened)

    def _resolved(self, alert: Alert) -> DispatchResult | None:
        """The source says its alert is over: on the incident's timeline and in its thread.
        It never starts, stops or re-runs a playbook: containment is judged by its own checks."""
        incident_id = self.store.join_open_incident(alert)
        if incident_id is None:
            self.store.mark_alert(
                alert.id, "dispatched", error="resolved: no open incident has this fingerprint", owner=self.owner
            )
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
        self.store.mark_alert(alert.id, "dispatched", incident_id=incident_id, owner=self.owner)
        return DispatchResult(incident_id=incident_id, new_incident=False)

    def _launch(
        self,
        incident_id: str,
        playbook: str,
        result: DispatchResult,
        led: list[tuple[str, bool]] | None = None,
        taken: bool = False,
    ) -> None:
        """Start the playbook's run; with ``led`` (runs created elsewhere, a launcher that
        leads), only its head start: the run's creation is added to ``led``. ``taken``: the
        claim of the run took it for the launcher."""
        if self.launcher is None:
            return
        try:
            if led is not None and isinstance(self.launcher, Leading):
                led.append((playbook, self.launcher.lead(incident_id, playbook, taken=taken)))
                return
            flow_run_id = self.launcher.launch(incident_id, playbook)
        except Exception as exc:  # the run is retried by retry_unlaunched; the alert is safe in the inbox
            log.warning("could not start playbook %s for %s yet: %s", playbook, incident_id, exc)
            result.failed[playbook] = str(exc)
            return
        result.launched[playbook] = flow_run_id  # the launcher recorded it in the store

    def _redrive(self, incident_id: str, playbook: str, result: DispatchResult, ended: bool) -> None:
        """``ended``: the runtime recorded the run's end. Then exactly one dispatcher looks
        (compare-and-set); otherwise the launcher reads the run's state itself (its engine may
        still be winding down after a Not contained end)."""
        if self.launcher is None:
            return
        if ended and not self.store.reopen_run(incident_id, playbook):
            return  # another dispatcher (alerts of one incident come in bursts) looks at it now
        try:
            again = self.launcher.redrive(incident_id, playbook)
        except Exception as exc:  # the alert waits, pending; its next try looks again
            if ended:
                self.store.reopen_run(incident_id, playbook, finished=True)
            log.warning("could not run playbook %s again for %s: %s", playbook, incident_id, exc)
            result.failed[playbook] = str(exc)
            return
        if not again:  # running, waiting, contained, or decided by a person: it stays as it is
            if ended:
                self.store.reopen_run(incident_id, playbook, finished=True)
            return
        self.store.add_timeline(
            incident_id, "run", f"a new alert runs playbook {playbook} again: the incident is not contained"
        )
        flow_run_id = self.store.flow_run_of(incident_id, playbook)
        if flow_run_id:
            result.launched[playbook] = flow_run_id

    def dispatch_pending(self, grace: timedelta = timedelta(0), limit: int = 200) -> int:
        """Dispatch alerts still pending in the inbox: after a restart, a failed launch, or a
        dispatcher that stopped. ``grace`` leaves alone unheld alerts younger than that (they are
        on their way through a dispatch queue); how many were dispatched."""
        count = 0
        now = utcnow()
        for alert in self.store.redrivable_alerts(now - grace, now - self.lease, limit):
            try:
                if self.dispatch(alert) is not None:
                    count += 1
            except Exception:
                log.exception("dispatch of alert %s failed; it stays pending", alert.id)
        return count

    def retry_unlaunched(self, age: timedelta = timedelta(seconds=5)) -> int:
        """Start the runs selected at least ``age`` ago whose flow run was never created."""
        count = 0
        for incident_id, playbook in self.store.runs_without_flow_run(utcnow() - age):
            result = DispatchResult(incident_id=incident_id, new_incident=False)
            self._launch(incident_id, playbook, result)
            count += len(result.launched)
        return count


def _entries(alert: Alert) -> list[Note]:
    """The timeline entries of an alert that joins or opens an incident."""
    entries: list[Note] = [
        (
            "alert",
            f"alert {alert.id} from {alert.source}: {alert.title}",
            {"alert_id": alert.id, "raw_sha256": alert.raw_sha256},
        )
    ]
    return entries + [("alert", f"note on alert {alert.id}: {note}", None) for note in alert.notes]
