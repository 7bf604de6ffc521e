"""Actions on AI agents through the agent control plane (docs/agent-control-plane.md):
evidence, tools, instances, memory, sessions, guardrails, and blocking or rate-limiting a
user or an IP address.

Changes to an agent (its tools, instances, memory, guardrails) take ``AgentInputs``: their
asset is ``agent:<name>``, so the runner refuses them until ``agent.collect_evidence`` has
preserved that agent's tool-call log, memory export and configuration. Changes to a session
or a subject (user, IP) only need some evidence on the incident (the alert itself): they
change who may reach the agent, not the agent.

The inputs (``tasks/agent_inputs.py``) come from alert text, which is attacker-controlled:
each is checked against a strict pattern before it reaches a URL, and an IP block on a
non-public, loopback or very broad range is refused unless the playbook allows private ranges.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from aisoar.actions import Effect
from connectors.agent import SYSTEM as AGENT
from connectors.agent import AgentControlPlane
from connectors.errors import ConnectorError
from tasks.agent_inputs import (
    STRICTNESS,
    AgentEvidenceInputs,
    AgentInputs,
    GuardrailInputs,
    InstanceInputs,
    IpInputs,
    PurgeInputs,
    RateLimitInputs,
    ResetInputs,
    RestoreGuardrailInputs,
    SessionInputs,
    SubjectInputs,
    ToolInputs,
    UnblockIpInputs,
    UnblockUserInputs,
    UserInputs,
)
from tasks.base import ActionContext, Outcome, ProbeResult, StepOutcome, absent, ok
from tasks.registry import action


def _plane(ctx: ActionContext) -> AgentControlPlane:
    return AGENT.client(ctx.settings)


def _why(ctx: ActionContext) -> dict[str, str]:
    return {"reason": f"aisoar playbook {ctx.playbook}, step {ctx.step_id}", "incident_id": ctx.incident_id}


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def _failed(summary: str) -> StepOutcome:
    return StepOutcome(status=Outcome.failed, summary=summary)


# evidence ----------------------------------------------------------------------------
@action(
    "agent.collect_evidence",
    effect=Effect.read_only,
    inputs=AgentEvidenceInputs,
    summary="Preserve the agent's tool-call log, memory export, tools, instances and config as evidence",
    collects_evidence=True,
)
def collect_evidence(ctx: ActionContext, inputs: AgentEvidenceInputs) -> StepOutcome:
    plane = _plane(ctx)
    collected_at = datetime.now(UTC).isoformat()
    try:
        calls, calls_complete = plane.tool_calls(inputs.agent, since=_iso(inputs.since))
    except ConnectorError as exc:
        if exc.status != 404:
            raise
        document = {"collected_at": collected_at, "system": "agent-control-plane", "agent": inputs.agent}
        sha256 = ctx.keep({**document, "found": False}, f"agent {inputs.agent} unknown to the runtime", inputs.asset)
        return ok(
            f"the runtime has no agent {inputs.agent} (recorded as evidence)", found=False, evidence_sha256=sha256
        )
    memory, memory_complete = plane.memory(inputs.agent)
    tools = plane.tools(inputs.agent)
    state: dict[str, Any] = {
        "collected_at": collected_at,
        "agent": inputs.agent,
        "tools": tools,
        "instances": plane.instances(inputs.agent),
        "config": plane.config(inputs.agent),
    }
    if inputs.session:
        state["session"] = plane.session(inputs.session)
    base = {"collected_at": collected_at, "system": "agent-control-plane", "agent": inputs.agent}
    calls_sha = ctx.keep(
        {**base, "since": _iso(inputs.since), "complete": calls_complete, "calls": calls},
        f"tool-call log of agent {inputs.agent}",
        asset=inputs.asset,
    )
    memory_sha = ctx.keep(
        {**base, "complete": memory_complete, "ids": [m.get("id") for m in memory], "items": memory},
        f"memory export of agent {inputs.agent}",
        asset=inputs.asset,
    )
    state_sha = ctx.keep(state, f"tools, instances and config of agent {inputs.agent}", asset=inputs.asset)
    config = state["config"]
    incomplete = [] if calls_complete and memory_complete else [" (truncated: the runtime holds more)"]
    return ok(
        f"agent {inputs.agent}: {len(calls)} tool calls, {len(memory)} memory items, {len(tools)} tools preserved"
        + "".join(incomplete),
        found=True,
        tool_calls=len(calls),
        memory_items=len(memory),
        disabled_tools=[t.get("tool") for t in tools if t.get("enabled") is False],
        temperature=config.get("temperature"),
        guardrail_mode=config.get("guardrail_mode"),
        session_status=(state.get("session") or {}).get("status"),
        complete=calls_complete and memory_complete,
        evidence_sha256={"tool_calls": calls_sha, "memory": memory_sha, "state": state_sha},
    )


# tools -------------------------------------------------------------------------------
def _probe_tool(enabled: bool) -> Callable[[ActionContext, ToolInputs, StepOutcome], ProbeResult]:
    def probe(ctx: ActionContext, inputs: ToolInputs, outcome: StepOutcome) -> ProbeResult:
        tools = {t.get("tool"): t for t in _plane(ctx).tools(inputs.agent)}
        found = tools.get(inputs.tool)
        if found is None:
            return ProbeResult(ok=False, detail=f"agent {inputs.agent} no longer lists tool {inputs.tool}")
        is_enabled = found.get("enabled") is True
        word = "enabled" if is_enabled else "disabled"
        return ProbeResult(ok=is_enabled is enabled, detail=f"the runtime lists tool {inputs.tool} as {word}")

    return probe


def _set_tool(ctx: ActionContext, inputs: ToolInputs, enabled: bool) -> StepOutcome:
    verb = "enable" if enabled else "disable"
    try:
        answer = _plane(ctx).set_tool(inputs.agent, inputs.tool, enabled, **_why(ctx))
    except ConnectorError as exc:
        if exc.status == 404:
            return absent(f"the runtime has no tool {inputs.tool} on agent {inputs.agent}; nothing to {verb}")
        raise
    changed = bool(answer.get("changed"))
    return ok(
        f"tool {inputs.tool} {verb}d on agent {inputs.agent}" + ("" if changed else " (already)"), changed=changed
    )


@action(
    "agent.disable_tool",
    effect=Effect.changing,
    inputs=ToolInputs,
    summary="Disable one tool of the agent: every call of it is refused",
    inverse="agent.enable_tool",
    probe=_probe_tool(False),
)
def disable_tool(ctx: ActionContext, inputs: ToolInputs) -> StepOutcome:
    return _set_tool(ctx, inputs, enabled=False)


@action(
    "agent.enable_tool",
    effect=Effect.changing,
    inputs=ToolInputs,
    summary="Enable the tool again (the inverse of agent.disable_tool)",
    inverse="agent.disable_tool",
    probe=_probe_tool(True),
)
def enable_tool(ctx: ActionContext, inputs: ToolInputs) -> StepOutcome:
    return _set_tool(ctx, inputs, enabled=True)


# instances ---------------------------------------------------------------------------
def _probe_instance(status: str) -> Callable[[ActionContext, InstanceInputs, StepOutcome], ProbeResult]:
    def probe(ctx: ActionContext, inputs: InstanceInputs, outcome: StepOutcome) -> ProbeResult:
        found = _plane(ctx).instance(inputs.agent, inputs.instance).get("status")
        return ProbeResult(ok=found == status, detail=f"the runtime reports instance {inputs.instance} {found}")

    return probe


def _set_instance(ctx: ActionContext, inputs: InstanceInputs, online: bool) -> StepOutcome:
    answer = _plane(ctx).set_instance(inputs.agent, inputs.instance, online, **_why(ctx))
    changed = bool(answer.get("changed"))
    status = "online" if online else "offline"
    return ok(
        f"instance {inputs.instance} of agent {inputs.agent} {status}" + ("" if changed else " (already)"),
        changed=changed,
    )


@action(
    "agent.take_offline",
    effect=Effect.changing,
    inputs=InstanceInputs,
    summary="Take one instance of the agent offline: it answers no requests",
    inverse="agent.bring_online",
    probe=_probe_instance("offline"),
)
def take_offline(ctx: ActionContext, inputs: InstanceInputs) -> StepOutcome:
    return _set_instance(ctx, inputs, online=False)


@action(
    "agent.bring_online",
    effect=Effect.changing,
    inputs=InstanceInputs,
    summary="Bring the instance back online (the inverse of agent.take_offline)",
    inverse="agent.take_offline",
    probe=_probe_instance("online"),
)
def bring_online(ctx: ActionContext, inputs: InstanceInputs) -> StepOutcome:
    return _set_instance(ctx, inputs, online=True)


# memory ------------------------------------------------------------------------------
def _without_evidence(ctx: ActionContext, inputs: AgentInputs) -> StepOutcome | None:
    """Destructive memory steps re-check that the memory export was preserved first."""
    kept = ctx.store.evidence_for(ctx.incident_id, asset=inputs.asset)
    if not any("memory export" in record.description for record in kept):
        return _failed(f"refused: the memory export of {inputs.asset} was not preserved (run agent.collect_evidence)")
    return None


def _probe_purged(ctx: ActionContext, inputs: PurgeInputs, outcome: StepOutcome) -> ProbeResult:
    items, complete = _plane(ctx).memory(inputs.agent)
    present = {str(item.get("id")) for item in items}
    if inputs.all:
        return ProbeResult(ok=not present, detail=f"the memory export now holds {len(present)} items")
    left = sorted(present & set(inputs.ids or []))
    if left:
        return ProbeResult(ok=False, detail=f"the memory export still holds {', '.join(left)}")
    if not complete:  # a purged id may sit beyond the part of the export that was read
        return ProbeResult(ok=False, detail=f"the memory export was truncated at {len(items)} items: cannot confirm")
    return ProbeResult(ok=True, detail=f"the memory export no longer holds any of the {len(inputs.ids or [])} ids")


@action(
    "agent.purge_memory",
    effect=Effect.destructive,
    inputs=PurgeInputs,
    summary="Delete the agent's memory items by id (or all of them); irreversible, needs the export as evidence",
    probe=_probe_purged,
)
def purge_memory(ctx: ActionContext, inputs: PurgeInputs) -> StepOutcome:
    if (refused := _without_evidence(ctx, inputs)) is not None:
        return refused
    answer = _plane(ctx).purge_memory(inputs.agent, None if inputs.all else inputs.ids, **_why(ctx))
    purged = [str(i) for i in answer.get("purged") or []]
    not_found = [str(i) for i in answer.get("not_found") or []]
    extra = f"; {len(not_found)} already gone" if not_found else ""
    return ok(
        f"purged {len(purged)} memory items of agent {inputs.agent}{extra}",
        purged=purged,
        not_found=not_found,
        remaining=answer.get("remaining"),
    )


def _probe_reset(ctx: ActionContext, inputs: ResetInputs, outcome: StepOutcome) -> ProbeResult:
    items, _ = _plane(ctx).memory(inputs.agent)
    now = [str(item.get("id")) for item in items]
    expected = [str(i) for i in outcome.output.get("ids", [])]
    detail = f"the memory export holds {len(now)} items; baseline {inputs.baseline} has {len(expected)}"
    return ProbeResult(ok=now == expected, detail=detail)


@action(
    "agent.reset_memory",
    effect=Effect.destructive,
    inputs=ResetInputs,
    summary="Replace the agent's memory with a baseline (default: its known-good state); irreversible",
    probe=_probe_reset,
)
def reset_memory(ctx: ActionContext, inputs: ResetInputs) -> StepOutcome:
    if (refused := _without_evidence(ctx, inputs)) is not None:
        return refused
    answer = _plane(ctx).reset_memory(inputs.agent, inputs.baseline, **_why(ctx))
    ids = [str(i) for i in answer.get("ids") or []]
    return ok(
        f"memory of agent {inputs.agent} reset to baseline {inputs.baseline} ({len(ids)} items)",
        ids=ids,
        changed=bool(answer.get("changed")),
    )


# sessions ----------------------------------------------------------------------------
def _probe_session(status: str) -> Callable[[ActionContext, SessionInputs, StepOutcome], ProbeResult]:
    def probe(ctx: ActionContext, inputs: SessionInputs, outcome: StepOutcome) -> ProbeResult:
        found = _plane(ctx).session(inputs.session)
        if found is None:
            return ProbeResult(ok=False, detail=f"the runtime no longer knows session {inputs.session}")
        return ProbeResult(
            ok=found.get("status") == status,
            detail=f"the runtime reports session {inputs.session} {found.get('status')}",
        )

    return probe


def _set_session(ctx: ActionContext, inputs: SessionInputs, quarantined: bool) -> StepOutcome:
    verb = "quarantine" if quarantined else "release"
    try:
        answer = _plane(ctx).set_session(inputs.session, quarantined, **_why(ctx))
    except ConnectorError as exc:
        if exc.status == 404:
            return absent(f"the runtime has no session {inputs.session}; nothing to {verb}")
        raise
    changed = bool(answer.get("changed"))
    word = "quarantined" if quarantined else "released"
    return ok(
        f"session {inputs.session} {word}" + ("" if changed else " (already)"),
        changed=changed,
        agent=answer.get("agent"),
        user=answer.get("user"),
    )


@action(
    "agent.quarantine_session",
    effect=Effect.changing,
    inputs=SessionInputs,
    summary="Quarantine the session: the agent refuses every further request in it",
    inverse="agent.release_session",
    probe=_probe_session("quarantined"),
)
def quarantine_session(ctx: ActionContext, inputs: SessionInputs) -> StepOutcome:
    return _set_session(ctx, inputs, quarantined=True)


@action(
    "agent.release_session",
    effect=Effect.changing,
    inputs=SessionInputs,
    summary="Release the session from quarantine (the inverse of agent.quarantine_session)",
    inverse="agent.quarantine_session",
    probe=_probe_session("active"),
)
def release_session(ctx: ActionContext, inputs: SessionInputs) -> StepOutcome:
    return _set_session(ctx, inputs, quarantined=False)


# guardrails --------------------------------------------------------------------------
def _above(temperature: Any, limit: float | None) -> bool:
    """Whether the runtime's temperature is above ``limit`` (unknown counts as above)."""
    return limit is not None and not (isinstance(temperature, int | float) and temperature <= limit)


def _probe_guardrails(ctx: ActionContext, inputs: GuardrailInputs, outcome: StepOutcome) -> ProbeResult:
    config = _plane(ctx).config(inputs.agent)
    temperature, mode = config.get("temperature"), str(config.get("guardrail_mode"))
    problems = []
    if _above(temperature, inputs.temperature):
        problems.append(f"temperature {temperature} is above {inputs.temperature}")
    if inputs.guardrail_mode is not None and STRICTNESS.get(mode, -1) < STRICTNESS[inputs.guardrail_mode]:
        problems.append(f"guardrail mode {mode} is less strict than {inputs.guardrail_mode}")
    detail = "; ".join(problems) or f"the runtime reports temperature {temperature}, guardrail mode {mode}"
    return ProbeResult(ok=not problems, detail=detail)


@action(
    "agent.set_guardrails",
    effect=Effect.changing,
    inputs=GuardrailInputs,
    summary="Tighten the agent's behaviour: lower temperature, stricter guardrail mode (never loosens)",
    inverse="agent.restore_guardrails",
    probe=_probe_guardrails,
)
def set_guardrails(ctx: ActionContext, inputs: GuardrailInputs) -> StepOutcome:
    plane = _plane(ctx)
    current = plane.config(inputs.agent)
    temperature, mode = current.get("temperature"), str(current.get("guardrail_mode"))
    new_temperature = None
    if _above(temperature, inputs.temperature):
        new_temperature = inputs.temperature
    new_mode = None
    if inputs.guardrail_mode is not None and STRICTNESS.get(mode, -1) < STRICTNESS[inputs.guardrail_mode]:
        new_mode = inputs.guardrail_mode
    previous = {"previous_temperature": temperature, "previous_guardrail_mode": mode}
    if new_temperature is None and new_mode is None:
        return ok(
            f"agent {inputs.agent} is already at least as strict (temperature {temperature}, mode {mode})",
            changed=False,
            temperature=temperature,
            guardrail_mode=mode,
            **previous,
        )
    answer = plane.patch_config(inputs.agent, temperature=new_temperature, guardrail_mode=new_mode, **_why(ctx))
    before = answer.get("previous") or {}
    after = answer.get("current") or {}
    return ok(
        f"agent {inputs.agent}: temperature {before.get('temperature')} -> {after.get('temperature')}, "
        f"guardrail mode {before.get('guardrail_mode')} -> {after.get('guardrail_mode')}",
        changed=bool(answer.get("changed")),
        temperature=after.get("temperature"),
        guardrail_mode=after.get("guardrail_mode"),
        previous_temperature=before.get("temperature"),
        previous_guardrail_mode=before.get("guardrail_mode"),
    )


def _probe_restored(ctx: ActionContext, inputs: RestoreGuardrailInputs, outcome: StepOutcome) -> ProbeResult:
    config = _plane(ctx).config(inputs.agent)
    found = (config.get("temperature"), config.get("guardrail_mode"))
    return ProbeResult(
        ok=found == (inputs.temperature, inputs.guardrail_mode),
        detail=f"the runtime reports temperature {found[0]}, guardrail mode {found[1]}",
    )


@action(
    "agent.restore_guardrails",
    effect=Effect.changing,
    inputs=RestoreGuardrailInputs,
    summary="Set temperature and guardrail mode back to recorded values (the inverse of agent.set_guardrails)",
    inverse="agent.set_guardrails",
    probe=_probe_restored,
)
def restore_guardrails(ctx: ActionContext, inputs: RestoreGuardrailInputs) -> StepOutcome:
    answer = _plane(ctx).patch_config(
        inputs.agent, temperature=inputs.temperature, guardrail_mode=inputs.guardrail_mode, **_why(ctx)
    )
    after = answer.get("current") or {}
    return ok(
        f"agent {inputs.agent}: temperature {after.get('temperature')}, mode {after.get('guardrail_mode')}",
        changed=bool(answer.get("changed")),
        previous=answer.get("previous"),
    )


# subjects: blocks --------------------------------------------------------------------
def _probe_block(kind: Literal["user", "ip"], attr: str, blocked: bool) -> Callable[..., ProbeResult]:
    def probe(ctx: ActionContext, inputs: BaseModel, outcome: StepOutcome) -> ProbeResult:
        value = str(getattr(inputs, attr))
        found = _plane(ctx).block(kind, value) is not None
        word = "blocked" if found else "not blocked"
        return ProbeResult(ok=found is blocked, detail=f"the runtime reports {kind} {value} {word}")

    return probe


def _block(ctx: ActionContext, kind: Literal["user", "ip"], value: str, expires_at: datetime | None) -> StepOutcome:
    answer = _plane(ctx).add_block(kind, value, _iso(expires_at), **_why(ctx))
    changed = bool(answer.get("changed"))
    until = f" until {answer.get('expires_at')}" if answer.get("expires_at") else ""
    return ok(
        f"{kind} {value} blocked{until}" + ("" if changed else " (already)"),
        changed=changed,
        expires_at=answer.get("expires_at"),
    )


def _unblock(ctx: ActionContext, kind: Literal["user", "ip"], value: str) -> StepOutcome:
    changed = bool(_plane(ctx).remove_block(kind, value, **_why(ctx)).get("changed"))
    return ok(f"{kind} {value} unblocked" + ("" if changed else " (was not blocked)"), changed=changed)


@action(
    "agent.block_user",
    effect=Effect.changing,
    inputs=UserInputs,
    summary="Block the user at the agent runtime: every request of theirs is refused",
    inverse="agent.unblock_user",
    probe=_probe_block("user", "user", True),
)
def block_user(ctx: ActionContext, inputs: UserInputs) -> StepOutcome:
    return _block(ctx, "user", inputs.user, inputs.expires_at)


@action(
    "agent.unblock_user",
    effect=Effect.changing,
    inputs=UnblockUserInputs,
    summary="Unblock the user (the inverse of agent.block_user)",
    inverse="agent.block_user",
    probe=_probe_block("user", "user", False),
)
def unblock_user(ctx: ActionContext, inputs: UnblockUserInputs) -> StepOutcome:
    return _unblock(ctx, "user", inputs.user)


@action(
    "agent.block_ip",
    effect=Effect.changing,
    inputs=IpInputs,
    summary="Block an IP address or CIDR network at the agent runtime (public ranges only unless allowed)",
    inverse="agent.unblock_ip",
    probe=_probe_block("ip", "ip", True),
)
def block_ip(ctx: ActionContext, inputs: IpInputs) -> StepOutcome:
    return _block(ctx, "ip", inputs.ip, inputs.expires_at)


@action(
    "agent.unblock_ip",
    effect=Effect.changing,
    inputs=UnblockIpInputs,
    summary="Unblock the IP address or network (the inverse of agent.block_ip)",
    inverse="agent.block_ip",
    probe=_probe_block("ip", "ip", False),
)
def unblock_ip(ctx: ActionContext, inputs: UnblockIpInputs) -> StepOutcome:
    return _unblock(ctx, "ip", inputs.ip)


# subjects: rate limits ---------------------------------------------------------------
def _probe_rate_limit(ctx: ActionContext, inputs: RateLimitInputs, outcome: StepOutcome) -> ProbeResult:
    found = _plane(ctx).rate_limit(inputs.kind, inputs.value)
    rpm = found.get("requests_per_minute") if found else None
    return ProbeResult(
        ok=rpm == inputs.requests_per_minute,
        detail=f"the runtime reports {inputs.kind} {inputs.value} limited to {rpm} requests/minute",
    )


def _probe_no_rate_limit(ctx: ActionContext, inputs: SubjectInputs, outcome: StepOutcome) -> ProbeResult:
    found = _plane(ctx).rate_limit(inputs.kind, inputs.value)
    word = "has no rate limit" if found is None else f"is still limited to {found.get('requests_per_minute')}/minute"
    return ProbeResult(ok=found is None, detail=f"the runtime reports {inputs.kind} {inputs.value} {word}")


@action(
    "agent.rate_limit",
    effect=Effect.changing,
    inputs=RateLimitInputs,
    summary="Limit a user or IP to N requests per minute at the agent runtime (429 beyond)",
    inverse="agent.clear_rate_limit",
    probe=_probe_rate_limit,
)
def rate_limit(ctx: ActionContext, inputs: RateLimitInputs) -> StepOutcome:
    answer = _plane(ctx).set_rate_limit(
        inputs.kind, inputs.value, inputs.requests_per_minute, _iso(inputs.expires_at), **_why(ctx)
    )
    changed = bool(answer.get("changed"))
    return ok(
        f"{inputs.kind} {inputs.value} limited to {inputs.requests_per_minute} requests/minute"
        + ("" if changed else " (already)"),
        changed=changed,
        previous_requests_per_minute=answer.get("previous"),
    )


@action(
    "agent.clear_rate_limit",
    effect=Effect.changing,
    inputs=SubjectInputs,
    summary="Remove the rate limit on a user or IP (the inverse of agent.rate_limit)",
    inverse="agent.rate_limit",
    probe=_probe_no_rate_limit,
)
def clear_rate_limit(ctx: ActionContext, inputs: SubjectInputs) -> StepOutcome:
    changed = bool(_plane(ctx).clear_rate_limit(inputs.kind, inputs.value, **_why(ctx)).get("changed"))
    return ok(
        f"rate limit on {inputs.kind} {inputs.value} removed" + ("" if changed else " (there was none)"),
        changed=changed,
    )
