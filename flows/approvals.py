"""Approval gates: a typed form in the Prefect UI, backed by an approval record.

The record (action, hash of the exact arguments, approvers, quorum, expiry, default,
answers) is the source of truth; the suspended Prefect run and its form are its view.
Pause keys are deterministic, so a run executed again finds the answers already given.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from prefect import get_run_logger
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from pydantic import Field

from aisoar.actions import ActionInfo
from aisoar.inert import markdown_text
from aisoar.models import utcnow
from aisoar.specs import Approval, PlaybookSpec, Step
from aisoar.store import ApprovalRecord
from flows.services import Services


class ApprovalForm(RunInput):
    approve: bool = Field(False, description="Tick to approve this exact action. Resuming without it rejects.")
    approver: str = Field("", max_length=200, description="Your name (recorded on the incident, self-declared)")
    reason: str = Field("", max_length=2000, description="Why you approve or reject")


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
        if e.kind in {"step", "verify"}
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
            f"**Why:** incident {incident.id} ({incident.severity.value}) in playbook *{spec.name}*. "
            f"Alert (untrusted text): {markdown_text(incident.title, 300)}",
            "",
            "**Done so far:**",
            *(done or ["- nothing"]),
            "",
            f"**Until when:** this request expires at {record.expires_at:%Y-%m-%d %H:%M:%S} UTC; "
            f"unanswered, it is {default}.",
            "",
            f"**Who may approve:** {markdown_text(', '.join(gate.approvers))} (quorum {gate.quorum}). "
            f"Arguments sha256 `{record.args_sha256[:16]}`.",
            "",
            "Tick **approve**, give your name and a reason, then resume. Resuming without ticking rejects.",
        ]
    )


def _expire(svc: Services, record: ApprovalRecord, gate: Approval) -> ApprovalRecord:
    status = "approved" if gate.on_timeout == "approve" else "rejected"
    decided = svc.store.decide_approval(
        record.id, status, "timeout", f"no answer before {record.expires_at:%H:%M:%S} UTC"
    )
    svc.store.add_timeline(
        record.incident_id, "approval", f"approval expired: {status} by default", step_id=record.step_id
    )
    return decided


def await_approval(
    svc: Services,
    spec: PlaybookSpec,
    step: Step,
    info: ActionInfo,
    inputs: dict[str, Any],
    incident_id: str,
) -> ApprovalRecord:
    """Return the step's decision, suspending the run until a responder gives it.

    The first time, the run is suspended (``suspend_flow_run``): it ends in the
    ``Suspended`` state with the approval form up, and no process is held while it
    waits. Resuming it in the UI reschedules it; the runtime runs it again from the
    top, the recorded steps are skipped, and here the same pause key returns the answer.
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
    if created:
        svc.store.add_timeline(
            incident_id,
            "approval",
            f"approval requested for {info.name} from {', '.join(gate.approvers)} "
            f"(expires {record.expires_at:%H:%M:%S} UTC)",
            step_id=step.id,
        )
    description = approval_description(svc, spec, step, info, inputs, record)
    given: list[str] = []
    reasons: list[str] = []
    attempt = 0
    while len(given) < gate.quorum:
        if record.expires_at <= utcnow():
            return _expire(svc, record, gate)
        key = f"approval-{step.id}-{attempt}"
        get_run_logger().info("waiting for approval of %s (%s)", step.id, info.name)
        answer = suspend_flow_run(
            wait_for_input=ApprovalForm.with_initial_data(description=description), timeout=None, key=key
        )
        attempt += 1
        name = " ".join(answer.approver.split())[:200] or "anonymous (self-declared)"
        first_time = key not in record.answers
        if first_time:
            record = svc.store.add_approval_answer(record.id, key, name, answer.approve, answer.reason)
        if not answer.approve:
            decided = svc.store.decide_approval(record.id, "rejected", name, answer.reason or "rejected in the UI")
            svc.store.add_timeline(incident_id, "approval", f"rejected by {name}: {answer.reason}", step_id=step.id)
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
