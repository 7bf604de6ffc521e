"""Tabletop exercises: a scenario's alerts through the real routing and each playbook they
start, in plan mode, in this process, against a throwaway store.

Each step runs under the runner's rules as it would in a run (conditions, branches, evidence
before a change, the approvals' gates), with every connector in plan mode: evidence is read
from the configured (or sandbox) systems, nothing is changed, nobody is told or asked. What
comes out is the path the playbook takes, what each step would change, who would be asked to
approve and within how long, and what the playbook would not cover (an objective no step on
the path would meet, a system that is not configured).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from aisoar.actions import Effect
from aisoar.approvers import gate_problems, load_directory
from aisoar.clocks import Deadline, deadlines_for, entity_refs, load_assets
from aisoar.config import Settings
from aisoar.evidence import EvidenceStore
from aisoar.ingress.dispatch import Dispatcher
from aisoar.models import Alert
from aisoar.specs import PlaybookSpec, Routing, Step, load_specs, route
from aisoar.store import Store
from flows.playbook import CLOSE_ACTION, remember, run_together, steps_to_run, template_context
from flows.services import Services
from flows.steps import DIRECT, run_step
from tasks.base import Outcome, StepOutcome
from tasks.registry import REGISTRY, catalog

log = logging.getLogger("aisoar.simulate")
ACTS = frozenset({Outcome.ok, Outcome.planned})  # a step on the path: it read, or would change


@dataclass(frozen=True)
class StepPlan:
    step: Step
    effect: Effect
    outcome: StepOutcome

    @property
    def on_path(self) -> bool:
        return self.outcome.status in ACTS

    @property
    def approval(self) -> str | None:
        """Who would be asked, and within how long (then what happens)."""
        gate = self.step.approval
        if gate is None:
            return None
        quorum = f"{gate.quorum} of " if gate.quorum > 1 else ""
        return f"{quorum}{', '.join(gate.approvers)} within {_duration(gate.timeout_seconds)}, else {gate.on_timeout}"


@dataclass(frozen=True)
class PlaybookPlan:
    spec: PlaybookSpec
    steps: list[StepPlan]
    unanswerable: list[str]  # gates on the path nobody in the approvers directory could answer

    @property
    def path(self) -> list[str]:
        """The steps that would run: read, or change something once approved."""
        return [plan.step.id for plan in self.steps if plan.on_path]

    def not_covered(self) -> list[str]:
        """What the playbook would leave undone: objectives no step on the path meets, steps
        whose system is not configured, or that a rule would refuse or that would fail."""
        by_id = {plan.step.id: plan for plan in self.steps}
        gaps = []
        if not self.spec.objectives:
            gaps.append("it contains nothing (it declares no objectives): a responder triages the incident by hand")
        for objective in self.spec.objectives:
            if not any(by_id[s].on_path for s in objective.any_of if s in by_id):
                gaps.append(f"objective '{objective.title}' would NOT be met: no step that meets it is on the path")
        for plan in self.steps:
            if plan.step.action == CLOSE_ACTION:
                continue  # in a plan it never closes: the objectives above say whether it would
            if plan.outcome.status in (Outcome.not_configured, Outcome.refused, Outcome.failed, Outcome.absent):
                gaps.append(f"{plan.step.id}: {plan.outcome.status.label}: {plan.outcome.summary}")
        gaps.extend(f"nobody could approve: {problem}" for problem in self.unanswerable)
        return gaps


@dataclass(frozen=True)
class Simulation:
    alert: Alert
    routing: Routing
    incident_id: str
    playbooks: list[PlaybookPlan]
    deadlines: list[Deadline]  # the regulatory clocks the incident would start


def simulate(settings: Settings, alerts: list[Alert]) -> list[Simulation]:
    """Each alert routed and each playbook it starts walked in plan mode. The store and the
    evidence are thrown away afterwards; the systems are only read."""
    with tempfile.TemporaryDirectory(prefix="aisoar-simulate-") as work:
        planned = settings.model_copy(
            update={"data_dir": Path(work), "database_url": None, "plan_mode": True, "head_start": False}
        )
        svc = _services(planned)
        specs = list(svc.specs.values())
        dispatcher = Dispatcher(svc.store, specs, None, timedelta(seconds=planned.dedup_window_seconds))
        simulations = []
        assets = load_assets(planned.assets_file)
        for alert in alerts:
            svc.store.accept_alert(alert, alert.id)
            routing = route(specs, alert)
            result = dispatcher.dispatch(alert)
            if result is None:
                raise RuntimeError(f"alert {alert.id} could not be dispatched in the simulation")
            plans = [walk(svc, spec, result.incident_id) for spec in routing.specs]
            incident = svc.store.get_incident(result.incident_id, with_timeline=False)
            deadlines = deadlines_for(incident.type, incident.severity, entity_refs([alert]), assets)
            simulations.append(Simulation(alert, routing, result.incident_id, plans, deadlines))
        svc.store.engine.dispose()
        return simulations


def _services(settings: Settings) -> Services:
    """The runtime's services, except that a gate nobody could answer does not stop a tabletop
    exercise: the plan says who would be asked and that nobody could answer."""
    store = Store(settings.store_url)
    specs = {loaded.spec.name: loaded.spec for loaded in load_specs(settings.specs_dir, catalog())}
    approvers = load_directory(settings.approvers_file)
    return Services(settings, store, EvidenceStore(settings.evidence_dir, store), specs, approvers)


def walk(svc: Services, spec: PlaybookSpec, incident_id: str) -> PlaybookPlan:
    """The playbook's steps in order, as its run takes them (after a change that fails or is
    refused, only the steps that tell people)."""
    context = template_context(svc, spec, incident_id, None)
    results = svc.store.step_results(incident_id, spec.name)
    plans: list[StepPlan] = []
    stopped = False
    together: dict[str, StepOutcome] = {}  # the outcomes of the steps a parallel step ran
    for step in steps_to_run(spec):
        effect = REGISTRY[step.action].info.effect
        if step.id in together:
            outcome = together.pop(step.id)
        elif stopped and (effect is not Effect.notifies or step.action == CLOSE_ACTION):
            outcome = StepOutcome(status=Outcome.skipped, summary="the run would stop before it (a change failed)")
        else:
            if step.parallel:  # its steps first (at once), as the run runs them
                ran = run_together(svc, spec, step, context, incident_id, None, calls=DIRECT)
                for member, done in ran:
                    remember(context, member, done)
                together = dict((member.id, done) for member, done in ran)
                results = svc.store.step_results(incident_id, spec.name)
            outcome = run_step(svc, spec, step, context, incident_id, None, calls=DIRECT, results=results)
        remember(context, step, outcome)
        plans.append(StepPlan(step, effect, outcome))
        if outcome.status in (Outcome.failed, Outcome.refused) and effect is not Effect.notifies:
            stopped = stopped or not step.continue_on_failure
    gated = [plan.step.id for plan in plans if plan.on_path and plan.step.approval is not None]
    unanswerable = [p for p in gate_problems([spec], svc.approvers) if any(f"step {s}:" in p for s in gated)]
    return PlaybookPlan(spec, plans, unanswerable)


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
