"""A playbook spec step by step, in-process, without Prefect: the quick way to test a spec's
conditions and templates against a connector's real server. The runner itself is tested end
to end in tests/test_playbooks.py; this walks the same rules: conditions evaluated, inputs
rendered and validated, approvals taken as given, evidence about an asset before a change to
it, every changing step verified by its probe."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aisoar.config import PROJECT_ROOT
from aisoar.outcomes import Verdict, verdict
from aisoar.specs import parse_spec
from aisoar.store import StepResult
from aisoar.templating import evaluate_condition, render_value
from tasks import REGISTRY
from tasks.base import ActionContext, AssetInputs, StepOutcome


def walk_playbook(
    ctx: ActionContext,
    spec_file: str,
    runs: str,
    *,
    entities: dict[str, Any],
    labels: dict[str, str] | None = None,
    incident_type: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Walk ``playbook_specs/<spec_file>``: the actions whose names start with ``runs`` run for
    real (with their probes); the others only have their inputs rendered and checked. Returns
    each step's outputs with ``status`` and ``summary`` (and ``inputs`` for the ones not run)."""
    spec = parse_spec((PROJECT_ROOT / "playbook_specs" / spec_file).read_text(), spec_file)
    context: dict[str, Any] = {
        "alert": {"labels": labels or {}},
        "incident": {"id": ctx.incident_id, "title": spec.title, "severity": "high", "type": incident_type},
        "entities": entities,
        "steps": {},
        "run": {"id": "r", "url": "http://ui/r"},
        "spec": {"name": spec.name, "title": spec.title},
    }
    for step in spec.steps:
        if step.when is not None and not evaluate_condition(step.when, context):
            context["steps"][step.id] = {"status": "skipped", "summary": "skipped: condition is false"}
            continue
        entry = REGISTRY[step.action]
        inputs = entry.info.inputs.model_validate(render_value(step.inputs, context))
        if not step.action.startswith(runs):
            context["steps"][step.id] = {"status": "ok", "summary": "ok", "inputs": inputs.model_dump()}
            continue
        if entry.info.changes_things and isinstance(inputs, AssetInputs):
            assert ctx.store.evidence_for(ctx.incident_id, asset=inputs.asset), f"{step.id}: no evidence first"
        outcome = outcome_of(entry.task.fn(ctx, inputs))
        if entry.info.changes_things and outcome.status.value == "ok":
            assert entry.probe is not None and entry.probe(ctx, inputs, outcome).ok, f"{step.id}: probe failed"
        context["steps"][step.id] = {**outcome.output, "status": outcome.status.value, "summary": outcome.summary}
    return dict(context["steps"])


def outcome_of(result: Any) -> StepOutcome:
    """What an action's task returned: the outcome, or the outcome inside a Skipped/Planned state."""
    if isinstance(result, StepOutcome):
        return result
    data = result.data
    assert isinstance(data, StepOutcome), result
    return data


def verdict_of(spec_file: str, steps: dict[str, dict[str, Any]]) -> Verdict:
    """The playbook's verdict from a walk's step results (as the runner computes it at the end)."""
    spec = parse_spec((PROJECT_ROOT / "playbook_specs" / spec_file).read_text(), spec_file)
    now = datetime.now(UTC)
    results = {
        step_id: StepResult(status=str(out["status"]), output={"summary": out["summary"]}, at=now)
        for step_id, out in steps.items()
        if "inputs" not in out  # the steps that ran for real
    }
    return verdict(spec, results)
