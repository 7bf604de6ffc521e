"""Running one playbook step under the runner's rules.

The rules: a step already recorded for the incident with a final outcome is not run
again; the guards of ``flows/rules.py`` before a change (evidence first, about this very
asset; a destructive step only behind an approval); every step that writes outside aisoar
(a change, a notification) is checked by its probe; an unreachable target is tried again
with backoff before the step fails; everything lands on the incident timeline with exactly
one outcome, recorded with the step's result in one transaction.

A step runs either inside the playbook's Prefect run (a task run, retried while its target is
unreachable) or directly, before the run exists (the head start, ``flows/head_start.py``: one
try, recorded with the ``head_start`` mark; the run then shows it and skips it).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.states import Completed, Failed
from prefect.utilities.annotations import quote
from pydantic import ValidationError

from aisoar.models import utcnow
from aisoar.specs import PlaybookSpec, Step
from aisoar.store import StepResult, Store
from aisoar.templating import TemplateProblem, evaluate_condition, evaluate_value, render_value
from connectors.errors import ConnectorError
from flows.approvals import await_approval
from flows.rules import Proposed, check_before_change
from flows.services import Services
from tasks.base import ActionContext, AssetInputs, Outcome, ProbeResult, StepOutcome
from tasks.registry import REGISTRY, Action

SENDING = "sending"  # timeline marker: a changing request of this step is about to be sent
HEAD_START = "head_start"  # step output mark: run before the playbook's Prefect run existed
log = logging.getLogger("aisoar.steps")


@task(cache_policy=NO_CACHE, persist_result=False)
def note_step(outcome: StepOutcome, action: str) -> State[StepOutcome]:
    """Shows a step whose action did not run here in the UI (it did not run at all, or ran before
    the run existed): its outcome as the state's name, as the action names it, the reason as its
    message."""
    return REGISTRY[action].state_of(outcome)


@task(cache_policy=NO_CACHE, persist_result=False)
def note_verified(ok: bool, detail: str) -> State[bool]:
    """Shows the check of a step done before its run existed (the head start) in the UI."""
    if ok:
        return Completed(name="Verified", message=detail, data=True)
    return Failed(name="Not verified", message=detail, data=False)


@dataclass(frozen=True)
class _Trying:
    """What the retry condition of the step being run needs (set around the task's call)."""

    store: Store
    incident_id: str
    step_id: str
    tries: int


_TRYING: ContextVar[_Trying] = ContextVar("aisoar_step_trying")


def _retry_when_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect's retry condition: only a target that is unreachable or overloaded (and did
    not act) is tried again; each new try is on the timeline, so a responder sees it."""
    error = state.result(raise_on_failure=False)
    if not (isinstance(error, ConnectorError) and error.transient):
        return False
    trying = _TRYING.get()
    attempt = task_run.run_count
    if attempt <= trying.tries:
        trying.store.add_timeline(
            trying.incident_id,
            "error",
            f"try {attempt} of {trying.tries + 1} failed ({error}); trying again",
            step_id=trying.step_id,
            data={"retry": attempt},
        )
    return True


@functools.lru_cache(maxsize=1024)
def _step_task(action_name: str, step_id: str, delays: tuple[float, ...]) -> Task[..., Any]:
    """The action's task named after the step, with its retries; made once per action, step and
    retry delays (making a Prefect task builds pydantic models: too dear for every run)."""
    return REGISTRY[action_name].task.with_options(
        name=step_id,
        task_run_name=step_id,
        retries=len(delays),
        retry_delay_seconds=list(delays) or 0,
        retry_condition_fn=_retry_when_transient,
    )


def _invoke(action: Action, step: Step, ctx: ActionContext, inputs: Any) -> StepOutcome:
    """Run the action's task (retried while its target is unreachable); a missing
    configuration or a connector failure becomes an outcome."""
    delays = tuple(ctx.settings.step_retry_delays)
    prefect_task = _step_task(action.name, step.id, delays)
    token = _TRYING.set(_Trying(ctx.store, ctx.incident_id, step.id, len(delays)))
    try:
        # ``quote``: Prefect would otherwise walk the whole context (settings, store, spec) looking
        # for futures, for every task run: measured as a tenth of a burst's CPU.
        state: State[Any] = cast(State[Any], prefect_task(quote(ctx), inputs, return_state=True))
    finally:
        _TRYING.reset(token)
    result = state.result(raise_on_failure=False)
    if isinstance(result, StepOutcome):
        return result
    if isinstance(result, ConnectorError):
        tried = f" after {len(delays) + 1} tries" if result.transient and delays else ""
        return StepOutcome(status=Outcome.failed, summary=f"{result}{tried}")
    return StepOutcome(status=Outcome.failed, summary=f"{type(result).__name__}: {result}")


@functools.lru_cache(maxsize=1024)
def _probe_task(action_name: str, step_id: str) -> Task[..., ProbeResult]:
    """The probe as a task, made once per action and step (making a Prefect task builds pydantic
    models: too dear to repeat for every run)."""
    action = REGISTRY[action_name]
    assert action.probe is not None
    return task(
        name=f"{step_id}.verify", task_run_name=f"{step_id}.verify", cache_policy=NO_CACHE, persist_result=False
    )(action.probe)


def _verify(action: Action, step: Step, ctx: ActionContext, inputs: Any, outcome: StepOutcome) -> ProbeResult:
    probe = _probe_task(action.name, step.id)
    state = cast(State[Any], probe(quote(ctx), inputs, outcome, return_state=True))
    if state.is_completed():
        result = state.result()
        assert isinstance(result, ProbeResult)
        return result
    error = state.result(raise_on_failure=False)
    return ProbeResult(ok=False, detail=f"the probe could not check: {error}")


def _invoke_direct(action: Action, step: Step, ctx: ActionContext, inputs: Any) -> StepOutcome:
    """The action called as a plain function: one try, no task run (the head start)."""
    try:
        result = action.task.fn(ctx, inputs)
    except ConnectorError as exc:
        return StepOutcome(status=Outcome.failed, summary=f"{exc} (one try before the run was created)")
    except Exception as exc:
        log.exception("step %s raised before the run was created", step.id)
        return StepOutcome(status=Outcome.failed, summary=f"{type(exc).__name__}: {exc}")
    if isinstance(result, StepOutcome):
        return result
    data = result.data  # the state that names a non-ok outcome carries it
    if isinstance(data, StepOutcome):
        return data
    return StepOutcome(status=Outcome.failed, summary=f"{action.name} returned {type(data).__name__}")


def _verify_direct(action: Action, step: Step, ctx: ActionContext, inputs: Any, outcome: StepOutcome) -> ProbeResult:
    assert action.probe is not None
    try:
        return action.probe(ctx, inputs, outcome)
    except Exception as exc:
        return ProbeResult(ok=False, detail=f"the probe could not check: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Calls:
    """How a step's action and probe are called: as task runs of the playbook's Prefect run, or
    directly before the run exists (the head start)."""

    invoke: Callable[[Action, Step, ActionContext, Any], StepOutcome]
    verify: Callable[[Action, Step, ActionContext, Any, StepOutcome], ProbeResult]
    in_run: bool


IN_RUN = Calls(_invoke, _verify, in_run=True)
DIRECT = Calls(_invoke_direct, _verify_direct, in_run=False)


def _describe(inputs: Any) -> str:
    if isinstance(inputs, AssetInputs):
        return inputs.asset
    return ", ".join(f"{k}={v}" for k, v in inputs.model_dump(mode="json").items())[:200]


def run_step(
    svc: Services,
    spec: PlaybookSpec,
    step: Step,
    context: dict[str, Any],
    incident_id: str,
    flow_run_id: str | None,
    *,
    calls: Calls = IN_RUN,
    show_head_start: bool = False,
    results: dict[str, StepResult] | None = None,
) -> StepOutcome:
    """Run the step unless it is recorded with a final outcome. ``show_head_start``: a step the
    head start recorded gets its task run in this run (the run is the record of every step).
    ``results``: the playbook's recorded step results, when the caller keeps them (read from the
    store otherwise); this step's result is added to them."""
    logger = get_run_logger() if calls.in_run else log
    store = svc.store
    if results is None:
        results = store.step_results(incident_id, spec.name)
    recorded = results.get(step.id)
    if recorded is not None and Outcome(recorded.status).final:
        logger.info("step %s already done (%s); not running it again", step.id, recorded.status)
        output = dict(recorded.output)
        summary = str(output.pop("summary", "recorded earlier"))
        outcome = StepOutcome(status=Outcome(recorded.status), summary=summary, output=output)
        if calls.in_run and show_head_start and output.get(HEAD_START):
            at = recorded.at.strftime("%H:%M:%S.%f")[:-3]
            shown = StepOutcome(
                status=outcome.status,
                summary=f"{summary} [done at {at} UTC, before this run was created: the head start]",
                output=output,
            )
            note_step.with_options(name=step.id, task_run_name=step.id)(shown, step.action, return_state=True)
            if "verified" in output:
                name = f"{step.id}.verify"
                checked = "checked at the target" if output["verified"] else "the check at the target failed"
                detail = f"{checked} at {at} UTC, before this run was created (the head start)"
                note_verified.with_options(name=name, task_run_name=name)(
                    bool(output["verified"]), detail, return_state=True
                )
        return outcome

    action = REGISTRY[step.action]
    ctx = ActionContext(
        incident_id=incident_id,
        playbook=spec.name,
        step_id=step.id,
        flow_run_id=flow_run_id,
        settings=svc.settings,
        store=store,
        evidence=svc.evidence,
        spec=spec,
    )
    outcome, ran = _decide_and_run(svc, spec, step, action, ctx, context, results, calls)
    if not ran and calls.in_run:
        note_step.with_options(name=step.id, task_run_name=step.id)(outcome, step.action, return_state=True)
    output = {**outcome.output, "summary": outcome.summary}
    data: dict[str, Any] = {"action": action.name, "status": outcome.status.value, "playbook": spec.name}
    if not calls.in_run:
        output[HEAD_START] = data[HEAD_START] = True
    store.record_step(incident_id, spec.name, step.id, outcome.status.value, output, timeline=(outcome.summary, data))
    results[step.id] = StepResult(status=outcome.status.value, output=output, at=utcnow())
    return outcome


def branch_not_taken(spec: PlaybookSpec, step: Step, context: dict[str, Any]) -> StepOutcome | None:
    """A step on a branch its decision did not take is skipped, and says which was taken."""
    membership = spec.branch_of(step.id)
    if membership is None:
        return None
    decision_id, cases = membership
    decided = context["steps"].get(decision_id) or {}
    taken = decided.get("case") if decided.get("status") == Outcome.ok.value else None
    if taken in cases:
        return None
    if decided.get("status") != Outcome.ok.value:
        why = f"decision {decision_id} did not decide ({decided.get('summary') or 'it did not run'})"
    elif taken is None:
        why = f"decision {decision_id} took no branch"
    else:
        why = f"decision {decision_id} took branch {taken}"
    where = ", ".join(sorted(cases))
    return StepOutcome(
        status=Outcome.skipped,
        summary=f"not taken: {why}; this step is on branch {where}",
        output={"not_taken": True, "decision": decision_id},
    )


def decision_inputs(step: Step, context: dict[str, Any]) -> dict[str, Any]:
    """A decision's inputs: the value of its ``switch`` (or ``then``/``else`` for its ``if``)."""
    if step.switch is not None:
        value = evaluate_value(step.switch, context)
        shown = None if value is None else str(value)[:200]
        return {"value": shown, "cases": list(step.cases), "default": bool(step.default)}
    truth = evaluate_condition(step.if_ or "", context)
    return {"value": "then" if truth else "else", "cases": ["then", "else"], "default": False}


def parallel_inputs(step: Step, context: dict[str, Any]) -> dict[str, Any]:
    """A parallel step's inputs: how each step it ran ended."""
    ran: dict[str, str] = {}
    for step_id in step.parallel:
        done = context["steps"].get(step_id) or {}
        ran[step_id] = Outcome(done["status"]).label if done.get("status") else "did not run"
    return {"ran": ran}


def _decide_and_run(
    svc: Services,
    spec: PlaybookSpec,
    step: Step,
    action: Action,
    ctx: ActionContext,
    context: dict[str, Any],
    results: dict[str, StepResult],
    calls: Calls,
) -> tuple[StepOutcome, bool]:
    """Returns the outcome and whether the action's task ran."""
    store, incident_id = svc.store, ctx.incident_id
    not_taken = branch_not_taken(spec, step, context)
    if not_taken is not None:
        return not_taken, False
    try:
        if step.when is not None and not evaluate_condition(step.when, context):
            return StepOutcome(status=Outcome.skipped, summary=f"skipped: condition `{step.when}` is false"), False
        if step.parallel:
            rendered = parallel_inputs(step, context)
        elif step.branches:
            rendered = decision_inputs(step, context)
        else:
            rendered = render_value(step.inputs, context)
        inputs = action.info.inputs.model_validate(rendered)
    except TemplateProblem as exc:
        return StepOutcome(status=Outcome.failed, summary=f"inputs could not be rendered: {exc}"), False
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return StepOutcome(status=Outcome.failed, summary=f"inputs are not valid for {action.name}: {problems}"), False

    if action.info.changes_things:
        proposed = Proposed(spec, step, action, inputs, results, store.evidence_for(incident_id))
        stopped = check_before_change(proposed)
        if stopped is not None:
            return stopped, False
    if step.approval is not None and svc.settings.plan_mode:
        # A plan waits for nobody and never runs a gated step, even in plan mode: it says who
        # would be asked and what would then run.
        people = [svc.approvers.label(p) for p in svc.approvers.members(list(step.approval.approvers))]
        who = f"{', '.join(step.approval.approvers)} ({', '.join(people) or 'nobody in the approvers directory'})"
        return StepOutcome(
            status=Outcome.planned,
            summary=f"plan: would ask {who} to approve {action.name} on {_describe(inputs)}; nothing was changed",
            output={"planned": {"action": action.name, "approvers": list(step.approval.approvers)}},
        ), False
    if step.approval is not None:
        if not calls.in_run:
            raise RuntimeError(f"step {step.id} waits for an approval: only its playbook run may run it")
        requester = str(context.get("run", {}).get("requested_by") or "") or None
        decision = await_approval(
            svc, spec, step, action.info, inputs.model_dump(mode="json"), incident_id, requested_by=requester
        )
        if decision.status != "approved":
            expired = decision.decided_by == "timeout"
            status = Outcome.expired if expired else Outcome.rejected
            who = svc.approvers.label(decision.decided_by or "?")
            what = "approval expired unanswered" if expired else f"approval rejected by {who}"
            reason = f": {decision.reason}" if decision.reason else ""
            return StepOutcome(status=status, summary=f"{what}{reason}; not done"), False

    sent_before = False
    if action.info.changes_things and svc.settings.plan_mode:
        sent_before = _sent_before(store.timeline_data(incident_id, "request", step.id), spec.name)
    elif action.info.changes_things:  # marked before it is sent; the earlier marks read with it
        sending = f"{SENDING}: {action.name} on {_describe(inputs)}"
        earlier = store.add_request(incident_id, step.id, sending, {SENDING: True, "playbook": spec.name})
        sent_before = _sent_before(earlier, spec.name)
    outcome = calls.invoke(action, step, ctx, inputs)
    if outcome.status is Outcome.ok and sent_before and outcome.output.get("already"):
        # The target was already in the wanted state because this very step asked for it
        # before the run was interrupted: credit that request, not somebody else.
        outcome = StepOutcome(
            status=outcome.status,
            summary=f"{outcome.summary} (by this step's earlier request, sent before the run was interrupted)",
            output={**outcome.output, "done_by_earlier_request": True},
        )
    if outcome.status is Outcome.ok and action.probe is not None and action.info.writes:
        probe = calls.verify(action, step, ctx, inputs, outcome)
        store.add_timeline(incident_id, "verify", probe.detail, step_id=step.id, data={"ok": probe.ok})
        outcome.output["verified"] = probe.ok
        if not probe.ok:
            return StepOutcome(
                status=Outcome.failed,
                summary=f"{outcome.summary}; verification failed: {probe.detail}",
                output=outcome.output,
            ), True
        outcome = StepOutcome(status=outcome.status, summary=f"{outcome.summary} (verified)", output=outcome.output)
    elif outcome.status is Outcome.ok and action.info.changes_things:
        outcome = StepOutcome(
            status=Outcome.failed,
            summary=f"{outcome.summary}; not verified: {action.name} has no probe",
            output=outcome.output,
        )
    return outcome, True


def _sent_before(requests: list[dict[str, Any]], playbook: str) -> bool:
    """Whether this playbook's step marked a request as being sent before (an earlier try)."""
    return any(data.get(SENDING) and data.get("playbook") == playbook for data in requests)
