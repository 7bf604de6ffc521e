"""What a playbook achieved, computed from the steps' recorded outcomes only.

A spec declares its objectives (``objectives:``, e.g. "the key is refused at the gateway or
at the provider"); an objective is met when one of its steps ended ``ok``, which for a
changing step means done *and verified* at the target by its probe. The incident's status,
the run's final state and the resolution text are computed here, never written in a spec.
The lifecycle follows NIST SP 800-61r3: open → containing → contained or not contained →
eradicated → recovered → closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aisoar.models import IncidentStatus
from aisoar.specs import Objective, PlaybookSpec
from aisoar.store import StepResult, Store

OK = "ok"
# Outcomes that say the step did not do its job, and the words a responder reads for them.
NOT_DONE = {
    "not_configured": "not configured",
    "absent": "no such asset at the target",
    "refused": "refused",
    "failed": "failed",
    "rejected": "approval rejected",
    "expired": "approval expired",
    "planned": "planned only",
}
PHASES = ("containment", "eradication", "recovery")
PHASE_STATUS = {
    "containment": IncidentStatus.contained,
    "eradication": IncidentStatus.eradicated,
    "recovery": IncidentStatus.recovered,
}


@dataclass(frozen=True)
class ObjectiveResult:
    objective: Objective
    met_by: str | None  # the step that met it, with its summary
    why_not: list[str] = field(default_factory=list)  # what each of its steps did instead

    @property
    def met(self) -> bool:
        return self.met_by is not None

    def line(self) -> str:
        if self.met_by is not None:
            return f"met: {self.objective.title} ({self.met_by})"
        reasons = "; ".join(self.why_not) or "none of its steps ran"
        return f"NOT met: {self.objective.title} ({reasons})"


@dataclass(frozen=True)
class Verdict:
    """One playbook's result for one incident."""

    playbook: str
    objectives: list[ObjectiveResult]
    not_done: list[str]  # every step that did not do its job, with why
    not_run: list[str]  # steps with no recorded outcome (the run stopped before them)
    outcomes: dict[str, str] = field(default_factory=dict)  # step id -> outcome

    @property
    def tracked_only(self) -> bool:
        """The playbook declares no objectives (triage, track only): it contains nothing."""
        return not self.objectives

    def met(self, phase: str) -> bool:
        return all(o.met for o in self.objectives if o.objective.phase == phase)

    @property
    def contained(self) -> bool:
        return not self.tracked_only and self.met("containment")

    @property
    def complete(self) -> bool:
        """Every objective of every phase is met: the incident may be closed."""
        return not self.tracked_only and all(o.met for o in self.objectives)

    @property
    def status(self) -> IncidentStatus:
        if self.tracked_only:
            return IncidentStatus.open
        if not self.contained:
            return IncidentStatus.not_contained
        reached = IncidentStatus.contained
        for phase in PHASES[1:]:
            if not any(o.objective.phase == phase for o in self.objectives):
                continue
            if not self.met(phase):
                break
            reached = PHASE_STATUS[phase]
        return reached

    def rejected(self) -> bool:
        return "rejected" in self.outcomes.values()

    def expired(self) -> bool:
        return "expired" in self.outcomes.values()

    def resolution(self) -> str:
        """What was achieved and what was not, from verified outcomes only."""
        if self.tracked_only:
            return "nothing contained: this playbook only records and tells (triage by a responder)"
        if not self.contained:
            head = "NOT contained"
        else:
            words = ["contained"]
            for phase, word in (("eradication", "eradicated"), ("recovery", "recovered")):
                if any(o.objective.phase == phase for o in self.objectives) and self.met(phase):
                    words.append(word)
            head = " and ".join(words) if len(words) < 3 else "contained, eradicated and recovered"
        return f"{head}: " + "; ".join(o.line() for o in self.objectives)


def _summary(result: StepResult) -> str:
    return str(result.output.get("summary", result.status))


def _why(step_id: str, result: StepResult) -> str:
    """``step: what happened``, naming the outcome unless the summary already does."""
    summary = _summary(result)
    label = NOT_DONE.get(result.status, result.status.replace("_", " "))
    if summary.lower().startswith((label, "skipped", "refused", "not closed", "plan", "approval")):
        return f"{step_id}: {summary}"
    return f"{step_id}: {label}: {summary}"


def verdict(spec: PlaybookSpec, results: Mapping[str, StepResult]) -> Verdict:
    """``results``: this playbook's recorded step results by step id."""
    objectives: list[ObjectiveResult] = []
    for objective in spec.objectives:
        met: list[str] = []
        why_not: list[str] = []
        for step_id in objective.any_of:
            result = results.get(step_id)
            if result is None:
                why_not.append(f"{step_id}: not run")
            elif result.status == OK:
                met.append(f"{step_id}: {_summary(result)}")
            else:
                why_not.append(_why(step_id, result))
        objectives.append(ObjectiveResult(objective, "; ".join(met) or None, why_not))
    not_done = [
        _why(step.id, results[step.id])
        for step in spec.steps
        if step.id in results and results[step.id].status in NOT_DONE
    ]
    not_run = [step.id for step in spec.steps if step.id not in results]
    outcomes = {step.id: results[step.id].status for step in spec.steps if step.id in results}
    return Verdict(spec.name, objectives, not_done, not_run, outcomes)


def judge(store: Store, spec: PlaybookSpec, incident_id: str) -> Verdict:
    """``spec``'s verdict for the incident, from the store's records."""
    return verdict(spec, store.step_results(incident_id, spec.name))


def incident_status(verdicts: list[Verdict]) -> IncidentStatus:
    """The incident's status from its playbooks' verdicts: the least advanced one decides;
    playbooks that contain nothing (triage) do not count. With none that contain, it stays open."""
    order = [
        IncidentStatus.not_contained,
        IncidentStatus.contained,
        IncidentStatus.eradicated,
        IncidentStatus.recovered,
    ]
    counted = [v.status for v in verdicts if not v.tracked_only]
    if not counted:
        return IncidentStatus.open
    return min(counted, key=order.index)
