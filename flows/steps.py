"""Running one playbook step under the runner's rules.

The rules: a step already recorded for the incident is not run again; evidence exists
before the first changing step; a destructive step runs only after an approval; every
changing step is verified by its probe; everything lands on the incident timeline.
"""

from __future__ import annotations

from typing import Any, cast

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.states import Completed, Failed
from pydantic import ValidationError

from aisoar.actions import Effect
from aisoar.models import IncidentStatus
from aisoar.specs import PlaybookSpec, Step
from aisoar.templating import TemplateProblem, evaluate_condition, render_value
from connectors.errors import ConnectorError
from flows.approvals import await_approval
from flows.services import Services
from tasks.base import ActionContext, AssetInputs, Outcome, ProbeResult, StepOutcome
from tasks.registry import REGISTRY, Action


@task(cache_policy=NO_CACHE, persist_result=False)
def note_step(outcome: StepOutcome) -> State[StepOutcome]:
    """Shows a step whose action did not run in the UI, with the reason as its state message."""
    if outcome.status is Outcome.failed:
        return Failed(message=outcome.summary, data=outcome)
    name = "Planned" if outcome.status is Outcome.planned else "Skipped"
    return Completed(name=name, message=outcome.summary, data=outcome)


def _invoke(action: Action, step: Step, ctx: ActionContext, inputs: Any) -> StepOutcome:
    """Run the action's task; a missing configuration or a connector failure becomes an outcome."""
    prefect_task = action.task.with_options(name=step.id, task_run_name=step.id)
    state: State[Any] = cast(State[Any], prefect_task(ctx, inputs, return_state=True))
    if state.is_completed():
        outcome = state.result()
        assert isinstance(outcome, StepOutcome)
        return outcome
    error = state.result(raise_on_failure=False)
    if isinstance(error, ConnectorError):
        return StepOutcome(status=Outcome.failed, summary=str(error))
    return StepOutcome(status=Outcome.failed, summary=f"{type(error).__name__}: {error}")


def _verify(action: Action, step: Step, ctx: ActionContext, inputs: Any, outcome: StepOutcome) -> ProbeResult:
    assert action.probe is not None
    probe = task(name=f"{step.id}.verify", cache_policy=NO_CACHE, persist_result=False)(action.probe)
    state: State[Any] = probe.with_options(task_run_name=f"{step.id}.verify")(ctx, inputs, outcome, return_state=True)
    if state.is_completed():
        result = state.result()
        assert isinstance(result, ProbeResult)
        return result
    error = state.result(raise_on_failure=False)
    return ProbeResult(ok=False, detail=f"the probe could not check: {error}")


def _describe(inputs: Any) -> str:
    if isinstance(inputs, AssetInputs):
        return inputs.asset
    return ", ".join(f"{k}={v}" for k, v in inputs.model_dump(mode="json").items())[:200]


def run_step(
    svc: Services, spec: PlaybookSpec, step: Step, context: dict[str, Any], incident_id: str, flow_run_id: str
) -> StepOutcome:
    logger = get_run_logger()
    store = svc.store
    recorded = store.step_result(incident_id, spec.name, step.id)
    if recorded is not None and recorded.status != Outcome.failed.value:  # a failed step is tried again
        logger.info("step %s already done (%s); not running it again", step.id, recorded.status)
        output = dict(recorded.output)
        summary = str(output.pop("summary", "recorded earlier"))
        return StepOutcome(status=Outcome(recorded.status), summary=summary, output=output)

    action = REGISTRY[step.action]
    ctx = ActionContext(
        incident_id=incident_id,
        playbook=spec.name,
        step_id=step.id,
        flow_run_id=flow_run_id,
        settings=svc.settings,
        store=store,
        evidence=svc.evidence,
    )
    outcome, ran = _decide_and_run(svc, spec, step, action, ctx, context, incident_id)
    if not ran:
        note_step.with_options(name=step.id, task_run_name=step.id)(outcome, return_state=True)
    store.record_step(
        incident_id, spec.name, step.id, outcome.status.value, {**outcome.output, "summary": outcome.summary}
    )
    store.add_timeline(
        incident_id,
        "step",
        outcome.summary,
        step_id=step.id,
        data={"action": action.name, "status": outcome.status.value},
    )
    return outcome


def _decide_and_run(
    svc: Services,
    spec: PlaybookSpec,
    step: Step,
    action: Action,
    ctx: ActionContext,
    context: dict[str, Any],
    incident_id: str,
) -> tuple[StepOutcome, bool]:
    """Returns the outcome and whether the action's task ran."""
    store = svc.store
    try:
        if step.when is not None and not evaluate_condition(step.when, context):
            return StepOutcome(status=Outcome.skipped, summary=f"skipped: condition `{step.when}` is false"), False
        rendered = render_value(step.inputs, context)
        inputs = action.info.inputs.model_validate(rendered)
    except TemplateProblem as exc:
        return StepOutcome(status=Outcome.failed, summary=f"inputs could not be rendered: {exc}"), False
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return StepOutcome(status=Outcome.failed, summary=f"inputs are not valid for {action.name}: {problems}"), False

    if action.info.changes_things and not store.evidence_for(incident_id):
        return StepOutcome(
            status=Outcome.failed, summary="refused: no evidence was captured before this changing step"
        ), False
    if (
        action.info.changes_things
        and isinstance(inputs, AssetInputs)
        and not store.evidence_for(incident_id, asset=inputs.asset)
    ):
        return StepOutcome(
            status=Outcome.failed,
            summary=f"refused: no evidence about {inputs.asset} was captured before this changing step "
            "(add the step that collects it before this one)",
        ), False
    if action.info.effect is Effect.destructive and step.approval is None:
        return StepOutcome(status=Outcome.failed, summary="refused: a destructive step needs an approval gate"), False
    if step.approval is not None and svc.settings.plan_mode:
        # A plan waits for nobody and never runs a gated step, even in plan mode: it says who
        # would be asked and what would then run.
        who = ", ".join(step.approval.approvers)
        return StepOutcome(
            status=Outcome.planned,
            summary=f"plan: would ask {who} to approve {action.name} on {_describe(inputs)}; nothing was changed",
            output={"planned": {"action": action.name, "approvers": list(step.approval.approvers)}},
        ), False
    if step.approval is not None:
        decision = await_approval(svc, spec, step, action.info, inputs.model_dump(mode="json"), incident_id)
        if decision.status != "approved":
            return StepOutcome(
                status=Outcome.skipped, summary=f"skipped: not approved ({decision.status} by {decision.decided_by})"
            ), False

    outcome = _invoke(action, step, ctx, inputs)
    if outcome.status is Outcome.ok and action.probe is not None and action.info.changes_things:
        probe = _verify(action, step, ctx, inputs, outcome)
        store.add_timeline(incident_id, "verify", probe.detail, step_id=step.id, data={"ok": probe.ok})
        outcome.output["verified"] = probe.ok
        if not probe.ok:
            return StepOutcome(
                status=Outcome.failed,
                summary=f"{outcome.summary}; verification failed: {probe.detail}",
                output=outcome.output,
            ), True
        outcome = StepOutcome(status=outcome.status, summary=f"{outcome.summary} (verified)", output=outcome.output)
        if store.get_incident(incident_id).status is IncidentStatus.open:
            store.set_incident_status(incident_id, IncidentStatus.contained)
    return outcome, True
