"""Approval gates: a typed form in the Prefect UI, backed by an approval record.

The record (action, hash of the exact arguments, approvers, quorum, expiry, default,
answers) is the source of truth; the suspended Prefect run and its form are its view.
Pause keys are deterministic, so a run executed again finds the answers already given.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any, cast

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.exceptions import Pause
from prefect.input import RunInput
from prefect.input.actions import read_flow_run_input
from prefect.input.run_input import Keyset, keyset_from_base_key
from prefect.states import Paused
from prefect.utilities.engine import propose_state_sync
from pydantic import Field

from aisoar.actions import ActionInfo
from aisoar.inert import markdown_quote, markdown_text
from aisoar.models import SecretFingerprint, utcnow
from aisoar.secrets import FORM_SECRET_PATTERN, redact, redact_clipped
from aisoar.specs import Approval, PlaybookSpec, Step
from aisoar.store import ApprovalRecord
from flows.services import Services
from flows.tell import runner_context, tell
from tasks.base import ActionContext

APPROVER_MAX = 200
REASON_MAX = 2000
# The Prefect server validates an answer against the form's schema before it stores it: an
# answer holding a secret is refused there, so Prefect's database never holds one.
NO_SECRETS: dict[str, Any] = {"not": {"pattern": FORM_SECRET_PATTERN}}


class ApprovalForm(RunInput):
    approve: bool = Field(False, description="Tick to approve this exact action. Resuming without it rejects.")
    approver: str = Field(
        "",
        max_length=APPROVER_MAX,
        description="Your name (recorded on the incident, self-declared)",
        json_schema_extra=NO_SECRETS,
    )
    reason: str = Field(
        "",
        max_length=REASON_MAX,
        description="Why you approve or reject. Never paste a key or token: the form refuses one.",
        json_schema_extra=NO_SECRETS,
    )


def without_secrets(answer: dict[str, Any]) -> dict[str, Any]:
    """The form's answer with any secret typed into it replaced by its fingerprint marker
    (the texts clipped back to the form's limits, markers being longer than secrets)."""
    found: dict[str, SecretFingerprint] = {}
    limits = {"approver": APPROVER_MAX, "reason": REASON_MAX}
    return {
        key: redact_clipped(value, found, limits[key])
        if key in limits and isinstance(value, str)
        else redact(value, found)
        for key, value in answer.items()
    }


def arguments_sha256(action: str, inputs: dict[str, Any]) -> str:
    canonical = json.dumps({"action": action, "inputs": inputs}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def approval_description(
    svc: Services, spec: PlaybookSpec, step: Step, info: ActionInfo, inputs: dict[str, Any], record: ApprovalRecord
) -> str:
    incident = svc.store.get_incident(record.incident_id)
    assets = "; ".join(f"{markdown_text(k)} = {markdown_text(str(v), 200)}" for k, v in inputs.items()) or "none"
    done = [
        f"- {markdown_text(e.step_id or '')}: {markdown_text(e.message, 200)}"
        for e in incident.timeline
        if e.kind == "step"  # each step's outcome (a change's says "(verified)")
    ]
    gate = step.approval
    assert gate is not None
    default = "**rejected**" if gate.on_timeout == "reject" else "**approved**"
    return "\n".join(
        [
            f"### Approval needed: {markdown_text(step.title or step.id)}",
            "",
            f"**What will be done:** `{info.name}`: {markdown_text(info.summary)}",
            "",
            f"**To which asset:** {assets}",
            "",
            f"**Until when:** this request expires at {record.expires_at:%Y-%m-%d %H:%M:%S} UTC; "
            f"unanswered, it is {default}.",
            "",
            f"**Who may approve:** {markdown_text(', '.join(gate.approvers))} (quorum {gate.quorum}). "
            "Tick **approve**, give your name and a reason, then submit. Submitting without ticking rejects.",
            "",
            f"**Why:** incident {incident.id} ({incident.severity.value}, {incident.status.value}) in playbook "
            f"*{spec.name}*. Alert: {markdown_quote(incident.title, 300)}",
            "",
            "**Done so far:**",
            *(done or ["- nothing"]),
            "",
            f"Arguments sha256 `{record.args_sha256[:16]}`.",
        ]
    )


def _expire(svc: Services, ctx: ActionContext, record: ApprovalRecord, gate: Approval) -> ApprovalRecord:
    status = "approved" if gate.on_timeout == "approve" else "rejected"
    decided = svc.store.decide_approval(
        record.id, status, "timeout", f"no answer before {record.expires_at:%Y-%m-%d %H:%M:%S} UTC"
    )
    message = f"approval of {record.action} EXPIRED unanswered: {status} by default"
    svc.store.add_timeline(record.incident_id, "approval", message, step_id=record.step_id)
    tell(ctx, f"Step {record.step_id}: {message}")
    return decided


AWAITING_APPROVAL = "Awaiting approval"


def _keyset(pause_key: str) -> Keyset:
    return keyset_from_base_key(f"approval-{pause_key}")


def suspend_for_answer(description: str, pause_key: str) -> ApprovalForm | None:
    """Suspend the run until a responder answers the form; return the answer, or None when
    the run was moved on without one (Retry or Change state in the UI, or the runtime
    putting a lost form back).

    Like Prefect's ``suspend_flow_run``, but the state is named "Awaiting approval". The form
    (schema and description) can only be stored after the run is suspended (Prefect clears a
    pause key's inputs on the transition); if the process dies in between, the runtime's
    sweep finds the Suspended run without its form and puts it back under a new pause key.
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("an approval can only be awaited inside a playbook run")
    flow_run_id = context.flow_run.id
    keyset = _keyset(pause_key)
    proposed: State[Any] = Paused(name=AWAITING_APPROVAL, reschedule=True, pause_key=pause_key)
    proposed.state_details.run_input_keyset = cast(dict[str, str], keyset)
    with get_client(sync_client=True) as client:
        state = propose_state_sync(client=client, state=proposed, flow_run_id=flow_run_id)
    # ``_sync``: these dispatch to their async twins when the thread runs an event loop.
    if state.is_running():
        # This pause happened before and the run has been moved on: by an answer, or not.
        value = read_flow_run_input(keyset["response"], flow_run_id=flow_run_id, _sync=True)  # type: ignore[call-arg]
        return ApprovalForm(**without_secrets(value)) if isinstance(value, dict) else None
    if not state.is_paused():
        raise RuntimeError(f"the run could not be suspended for approval: Prefect answered {state.type.value}")
    ApprovalForm.with_initial_data(description=description).save(keyset, flow_run_id=flow_run_id, _sync=True)  # type: ignore[call-arg]
    raise Pause(state=state)


def await_approval(
    svc: Services,
    spec: PlaybookSpec,
    step: Step,
    info: ActionInfo,
    inputs: dict[str, Any],
    incident_id: str,
) -> ApprovalRecord:
    """Return the step's decision, suspending the run until a responder gives it.

    The first time, the run is suspended: it ends in the "Awaiting approval" state with the
    form up, and no process is held while it waits. Resuming it in the UI reschedules it; the
    runtime runs it again from the top, the recorded steps are skipped, and here the same
    pause key returns the answer. Only an answer decides: a run moved on without one gets
    the form again, under a new pause key.
    """
    gate = step.approval
    assert gate is not None
    args_hash = arguments_sha256(info.name, inputs)
    record, created = svc.store.open_approval(
        incident_id,
        spec.name,
        step.id,
        info.name,
        args_hash,
        list(gate.approvers),
        gate.quorum,
        timedelta(seconds=gate.timeout_seconds),
        gate.on_timeout,
    )
    if record.status != "pending":
        return record
    if record.args_sha256 != args_hash:
        return svc.store.decide_approval(
            record.id, "rejected", "aisoar", "the step's arguments changed after approval was requested"
        )
    ctx = runner_context(svc, incident_id, spec.name, _run_id(), step.id)
    if created:
        message = (
            f"approval requested for {info.name} from {', '.join(gate.approvers)} "
            f"(expires {record.expires_at:%Y-%m-%d %H:%M:%S} UTC; unanswered, it is "
            f"{'rejected' if gate.on_timeout == 'reject' else 'approved'})"
        )
        svc.store.add_timeline(incident_id, "approval", message, step_id=step.id)
        tell(ctx, f"Approval needed for step {step.id}: {message}. Answer it on the run page.")
    description = approval_description(svc, spec, step, info, inputs, record)
    given: list[str] = []
    reasons: list[str] = []
    attempt = 0
    while len(given) < gate.quorum:
        if record.expires_at <= utcnow():
            return _expire(svc, ctx, record, gate)
        key = f"approval-{step.id}-{attempt}"
        attempt += 1
        get_run_logger().info("waiting for approval of %s (%s)", step.id, info.name)
        answer = suspend_for_answer(description, key)
        if answer is None:
            if key not in record.answers and record.expires_at > utcnow():
                record = svc.store.add_approval_answer(record.id, key, "", None, "")
                svc.store.add_timeline(
                    incident_id,
                    "approval",
                    "the run was moved on without an answer; the approval form is up again",
                    step_id=step.id,
                )
            continue
        name = " ".join(answer.approver.split())[:200] or "anonymous (self-declared)"
        first_time = key not in record.answers
        if first_time:
            record = svc.store.add_approval_answer(record.id, key, name, answer.approve, answer.reason)
        if not answer.approve:
            decided = svc.store.decide_approval(record.id, "rejected", name, answer.reason or "rejected in the UI")
            svc.store.add_timeline(incident_id, "approval", f"rejected by {name}: {answer.reason}", step_id=step.id)
            tell(ctx, f"Step {step.id} ({info.name}) was REJECTED by {name}: {answer.reason or 'no reason given'}")
            return decided
        if name in given:
            if first_time:
                svc.store.add_timeline(
                    incident_id, "approval", f"{name} approved twice; quorum needs others", step_id=step.id
                )
            continue
        given.append(name)
        reasons.append(answer.reason)
        if first_time:
            svc.store.add_timeline(incident_id, "approval", f"approved by {name}: {answer.reason}", step_id=step.id)
    return svc.store.decide_approval(record.id, "approved", ", ".join(given), " / ".join(r for r in reasons if r))


def _run_id() -> str | None:
    context = FlowRunContext.get()
    return str(context.flow_run.id) if context is not None and context.flow_run is not None else None
