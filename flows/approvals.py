"""Approval gates: a typed form in the Prefect UI and buttons in Slack, backed by one record.

The record (action, hash of the exact arguments, the people who may answer, quorum, expiry,
default, every answer) is the source of truth; the suspended Prefect run with its form, and
the request in the incident's Slack thread, are its views. An answer counts only from a
verified person: a Slack click (Slack signs the clicker's id) or a one-time code sent to
that person (typed into the form or given to ``aisoar approve``). Pause keys are
deterministic, so a run executed again finds the forms already answered.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any, Literal, cast

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
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
from aisoar.approval_codes import CODE_PATTERN
from aisoar.inert import markdown_quote, markdown_text
from aisoar.models import SecretFingerprint, utcnow
from aisoar.secrets import FORM_SECRET_PATTERN, redact, redact_clipped
from aisoar.specs import PlaybookSpec, Step
from aisoar.store import ApprovalAnswer, ApprovalRecord
from connectors.errors import NotConfigured, Planned
from flows.answers import FOOTER, AnswerDesk, request_lines, status_line, when, who_may
from flows.services import Services
from flows.tell import runner_context, tell
from tasks.base import ActionContext
from tasks.incident import failed_to_tell
from tasks.slack import post_approval_request

REASON_MAX = 2000
# The Prefect server validates an answer against the form's schema before it stores it: an
# answer holding a secret is refused there, so Prefect's database never holds one.
NO_SECRETS: dict[str, Any] = {"not": {"pattern": FORM_SECRET_PATTERN}}


class ApprovalForm(RunInput):
    decision: Literal["approve", "reject"] = Field(
        title="Decision",
        description="Approve runs this exact action (once the quorum is met); reject does not run it.",
    )
    code: str = Field(
        title="Your one-time approval code",
        max_length=40,
        pattern=CODE_PATTERN,
        description="Twelve letters and digits, like K7QX-M2PA-9RTE, sent to you by Slack direct message when "
        "the approval was requested. It says who you are: without a valid code the answer is refused (and "
        "recorded).",
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
    limits = {"reason": REASON_MAX}
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
    """The form's text: the decision and its deadline first, then what and why, then the past."""
    incident = svc.store.get_incident(record.incident_id)
    assets = "; ".join(f"{markdown_text(k)} = {markdown_text(str(v), 200)}" for k, v in inputs.items()) or "none"
    done = [
        f"- {markdown_text(e.step_id or '')}: {markdown_text(e.message, 120)}"
        for e in incident.timeline
        if e.kind == "step"  # each step's outcome (a change's says "(verified)")
    ]
    default = "**rejected** (reversible containment stays)" if record.on_timeout == "reject" else "**approved**"
    return "\n".join(
        [
            f"### Decide: {markdown_text(step.title or step.id)} ({incident.id})",
            "",
            f"**Expires** {when(record.expires_at)}; unanswered, it is {default}.",
            "",
            f"**Who may approve:** {markdown_text(who_may(svc.approvers, record))}.",
            "",
            "Choose **approve** or **reject** (click the arrow of the Decision box), enter the one-time code "
            "sent to you by Slack direct message, and submit. The Approve / Reject buttons in the incident's "
            "Slack thread need no code.",
            "",
            f"**What will be done:** `{info.name}` on {assets}: {markdown_text(info.summary)}",
            "",
            f"**Why:** incident {incident.id} ({incident.severity.value}, {incident.status.value}), playbook "
            f"*{spec.name}*. Alert: {markdown_quote(incident.title, 300)}",
            "",
            "**Done so far:**",
            *(done[-5:] or ["- nothing"]),
            *(["- (and earlier steps: see the timeline)"] if len(done) > 5 else []),
            "",
            f"Arguments sha256 `{record.args_sha256[:16]}` · request {record.id}.",
        ]
    )


def _expire(svc: Services, ctx: ActionContext, record: ApprovalRecord) -> ApprovalRecord:
    status = "approved" if record.on_timeout == "approve" else "rejected"
    decided = svc.store.decide_approval(
        record.id, status, "timeout", f"no answer before {record.expires_at:%Y-%m-%d %H:%M:%S} UTC"
    )
    if decided.decided_by != "timeout":
        return decided  # answered at the last moment
    keep = "; reversible containment stays, the step does not run" if status == "rejected" else ""
    message = f"approval of {record.action} EXPIRED unanswered: {status} by default{keep}"
    svc.store.add_timeline(record.incident_id, "approval", message, step_id=record.step_id)
    tell(ctx, f"Step {record.step_id}: {message}")
    AnswerDesk(svc).refresh_message(decided)
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
    requested_by: str | None = None,
) -> ApprovalRecord:
    """Return the step's decision, suspending the run until verified people give it.

    The first time, the request is presented (the Slack message with its buttons, a code
    for each approver) and the run is suspended: it ends in the "Awaiting approval" state
    with the form up, and no process is held while it waits. An answer in Slack or the CLI
    wakes it once it decides; an answer in the form resumes it. Executed again from the
    top, the run finds the record decided, or counts the form's answer and waits again.
    """
    gate = step.approval
    assert gate is not None
    args_hash = arguments_sha256(info.name, inputs)
    record, _ = svc.store.open_approval(
        incident_id,
        spec.name,
        step.id,
        info.name,
        args_hash,
        list(gate.approvers),
        svc.approvers.members(list(gate.approvers)),
        gate.quorum,
        timedelta(seconds=gate.timeout_seconds),
        gate.on_timeout,
        requested_by=svc.approvers.resolve(requested_by) if requested_by else None,
        allow_self=gate.allow_self_approval,
        flow_run_id=_run_id(),
    )
    ctx = runner_context(svc, incident_id, spec.name, _run_id(), step.id)
    desk = AnswerDesk(svc)
    if record.status == "pending" and record.args_sha256 != args_hash:
        record = svc.store.decide_approval(
            record.id, "rejected", "aisoar", "the step's arguments changed after approval was requested"
        )
    elif record.status == "approved" and record.args_sha256 != args_hash:
        # An approval is for the exact action it was given for, never for what the step now renders.
        void = "the step's arguments changed after it was approved; the approval does not cover them"
        svc.store.add_timeline(incident_id, "approval", f"approval VOID: {void}", step_id=step.id)
        return record.model_copy(update={"status": "rejected", "decided_by": "aisoar", "reason": void})
    if record.status == "pending" and "presented" not in record.forms:
        present(svc, desk, ctx, record, step, info)
    description = approval_description(svc, spec, step, info, inputs, record)
    attempt = 0
    while True:
        record = _current(svc, record.id)
        if record.status != "pending":
            return _decided(svc, record)
        if record.expires_at <= utcnow():
            return _decided(svc, _expire(svc, ctx, record))
        key = f"approval-{step.id}-{attempt}"
        attempt += 1
        if key in record.forms:
            continue  # counted (or found empty) by an earlier execution of this run: never asked again
        get_run_logger().info("waiting for approval of %s (%s)", step.id, info.name)
        answer = suspend_for_answer(description, key)
        svc.store.note_form(record.id, key, {"answered": answer is not None})
        if answer is not None:
            desk.answer_with_code(record, answer.code, answer.decision, answer.reason, "prefect-ui", f"form:{key}")
            continue
        record = _current(svc, record.id)
        if record.status == "pending" and record.expires_at > utcnow():
            svc.store.add_timeline(
                incident_id,
                "approval",
                "the run was moved on without an answer; the approval form is up again",
                step_id=step.id,
            )


def present(
    svc: Services, desk: AnswerDesk, ctx: ActionContext, record: ApprovalRecord, step: Step, info: ActionInfo
) -> None:
    """Ask: the request with its buttons in the incident's thread, a code to each approver. Only
    the execution that claims the record's "presented" mark asks (two executions of one run, a
    replica's and the one that took its run over, never post the request twice)."""
    if not svc.store.claim_form(record.id, "presented", {}):
        return
    default = "rejected" if record.on_timeout == "reject" else "approved"
    message = (
        f"approval requested for {info.name}: {who_may(svc.approvers, record)}; expires "
        f"{when(record.expires_at)}, unanswered it is {default}"
    )
    svc.store.add_timeline(record.incident_id, "approval", message, step_id=step.id)
    lines = request_lines(svc.approvers, record, step.title or step.id, info.summary)
    lines.append(status_line(svc.approvers, record))
    footer = f"{FOOTER} <{ctx.run_url}|Open the run in the Prefect UI>" if ctx.run_url else FOOTER
    try:
        text = f"Approval needed for step {step.id}: {info.name}"
        posted = post_approval_request(ctx, text, lines, record.id, footer)
        svc.store.set_approval_message(record.id, posted["channel"], posted["ts"])
    except (NotConfigured, Planned):
        tell(ctx, f"Approval needed for step {step.id}: {message}. Answer it on the run page with your code.")
    except Exception as exc:
        failed_to_tell(ctx, "Slack (the approval request)", exc)
    said = desk.send_codes(record, record.allowed, "aisoar asks you to approve a step.")
    svc.store.add_timeline(
        record.incident_id,
        "approval",
        "one-time codes: " + ("; ".join(said) or "none sent (every approver has one already)"),
        step_id=step.id,
    )
    reached = [line for line in said if line.endswith("code sent by Slack DM")]
    on_slack = _current(svc, record.id).slack_ts is not None
    if not reached and not (on_slack and svc.settings.slack_signing_secret is not None):
        warning = (
            f"NOBODY CAN APPROVE step {step.id}: no approver got a code and there are no Slack buttons "
            f"({'; '.join(said)}); unanswered, the request is {default} at {when(record.expires_at)}"
        )
        svc.store.add_timeline(record.incident_id, "error", warning, step_id=step.id)
        tell(ctx, warning)


def _current(svc: Services, approval_id: str) -> ApprovalRecord:
    found = svc.store.get_approval(approval_id)
    assert found is not None
    return found


def _decided(svc: Services, record: ApprovalRecord) -> ApprovalRecord:
    """The run has seen the decision: it says so on its own page (once), and needs no waking."""
    if "reported" not in record.forms:
        svc.store.note_form(record.id, "reported", {})
        lines = [
            f"# {record.step_id}: {record.status.upper()}",
            "",
            f"**Decided by:** {markdown_text(_by(svc, record))} at {when(record.decided_at or utcnow())}",
            "",
            f"**Reason:** {markdown_text(record.reason or '-', 500)}",
            "",
            f"**Action:** `{record.action}` · arguments sha256 `{record.args_sha256[:16]}` · request {record.id}",
            "",
            "| When (UTC) | Via | Who | Answer | Counted |",
            "|---|---|---|---|---|",
            *(_answer_row(svc, a) for a in record.answers),
        ]
        try:
            create_markdown_artifact(
                markdown="\n".join(lines),
                key=f"approval-{record.step_id}-{record.id[-8:]}".lower().replace("_", "-"),
                description=f"Approval of {record.step_id}: {record.status} by {_by(svc, record)}",
            )
        except Exception:
            get_run_logger().warning("could not publish the approval's decision as an artifact")
        get_run_logger().info("approval of %s: %s by %s", record.step_id, record.status, _by(svc, record))
    if record.wake_pending:
        svc.store.woken(record.id)
    return record


def _answer_row(svc: Services, answer: ApprovalAnswer) -> str:
    who = svc.approvers.label(answer.person) if answer.person else answer.claimed
    counted = "yes" if answer.counted else "no: " + markdown_text(answer.refusal or "", 120)
    return f"| {answer.at:%H:%M:%S} | {answer.channel} | {markdown_text(who, 80)} | {answer.decision} | {counted} |"


def _by(svc: Services, record: ApprovalRecord) -> str:
    if record.status == "approved" and record.approved_by:
        return ", ".join(svc.approvers.label(p) for p in record.approved_by)
    return svc.approvers.label(record.decided_by or "?")


def _run_id() -> str | None:
    context = FlowRunContext.get()
    return str(context.flow_run.id) if context is not None and context.flow_run is not None else None
