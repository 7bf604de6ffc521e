"""The runner's rules before a step changes anything, each a named guard.

They read like the list in docs/architecture.md, in the order they apply. A guard returns
the outcome that stops the step (refused, or not configured), or None to let it run. All of
them read what the runner already loaded for the step: its playbook's recorded results and
the incident's evidence (one query each), never the store again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aisoar.actions import Effect
from aisoar.specs import PlaybookSpec, Step
from aisoar.store import EvidenceRecord, StepResult
from tasks.base import AssetInputs, Outcome, StepOutcome
from tasks.registry import Action


@dataclass(frozen=True)
class Proposed:
    """A changing step about to run, and what the runner knows about its incident."""

    spec: PlaybookSpec
    step: Step
    action: Action
    inputs: Any
    results: dict[str, StepResult]  # this playbook's recorded step results
    evidence: list[EvidenceRecord]  # the incident's evidence


Guard = Callable[[Proposed], StepOutcome | None]


def not_configured_stays_not_configured(p: Proposed) -> StepOutcome | None:
    """A change on a system whose evidence step was not configured is not configured too,
    not refused for the evidence it could not collect. (An earlier step of the namespace that
    lacked something else, e.g. a model publisher's signing key, says nothing of the system.)"""
    from connectors.systems import BY_NAME

    namespace = p.action.name.split(".", 1)[0]
    system = BY_NAME[namespace].title if namespace in BY_NAME else None
    for earlier in p.spec.steps:
        if earlier.id == p.step.id:
            break
        result = p.results.get(earlier.id)
        if result is not None and result.status == Outcome.not_configured.value:
            lacked = result.output.get("not_configured_system")
            if lacked is not None and system is not None and lacked != system:
                continue
            if earlier.action.startswith(f"{namespace}."):
                summary = str(result.output.get("summary", "")) or f"{namespace} is not configured"
                return StepOutcome(status=Outcome.not_configured, summary=summary)
    return None


def evidence_first(p: Proposed) -> StepOutcome | None:
    """Evidence exists for the incident before any changing step."""
    if not p.evidence:
        return StepOutcome(
            status=Outcome.refused, summary="refused: no evidence was captured before this changing step"
        )
    return None


def evidence_about_this_asset(p: Proposed) -> StepOutcome | None:
    """A change on an asset evidence can be collected about needs evidence about that asset."""
    if isinstance(p.inputs, AssetInputs) and not any(item.asset == p.inputs.asset for item in p.evidence):
        return StepOutcome(
            status=Outcome.refused,
            summary=f"refused: no evidence about {p.inputs.asset} was captured before this changing step "
            "(add the step that collects it before this one)",
        )
    return None


def destructive_needs_a_gate(p: Proposed) -> StepOutcome | None:
    """A destructive step runs only behind an approval gate."""
    if p.action.info.effect is Effect.destructive and p.step.approval is None:
        return StepOutcome(status=Outcome.refused, summary="refused: a destructive step needs an approval gate")
    return None


BEFORE_A_CHANGE: tuple[Guard, ...] = (
    not_configured_stays_not_configured,
    evidence_first,
    evidence_about_this_asset,
    destructive_needs_a_gate,
)


def check_before_change(proposed: Proposed) -> StepOutcome | None:
    """The first guard that stops the change, if any (the runner asks only for changing steps)."""
    for guard in BEFORE_A_CHANGE:
        stopped = guard(proposed)
        if stopped is not None:
            return stopped
    return None
