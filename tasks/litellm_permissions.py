"""Agent containment on the LiteLLM gateway's own control plane: the tools a key may call through
the gateway's MCP servers (``object_permission.blocked_tools``) and the guardrails the gateway
runs for a key (``guardrails``, names configured on the proxy). Each change reads the key first,
sends the whole wanted value (so the proxy's merge or replace gives the same result), records
what was there, and is read back by its probe; each has its inverse."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from aisoar.actions import Effect
from connectors.errors import ConnectorError
from connectors.litellm import SYSTEM as LITELLM
from tasks.base import ActionContext, ProbeResult, StepOutcome, absent, ok
from tasks.litellm import _json_text, _OnGatewayKey
from tasks.registry import action

ToolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")]
GuardrailName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


ToolList = Annotated[list[ToolName], BeforeValidator(_json_text), Field(min_length=1, max_length=50)]
GuardrailList = Annotated[list[GuardrailName], BeforeValidator(_json_text), Field(max_length=20)]


class KeyTools(_OnGatewayKey):
    tools: ToolList = Field(description="MCP tool names, e.g. github-create_issue (a list, or its JSON text)")


class KeyGuardrails(_OnGatewayKey):
    guardrails: GuardrailList = Field(min_length=1, description="guardrail names configured on the proxy")


class PreviousGuardrails(_OnGatewayKey):
    guardrails: GuardrailList = Field(
        description="the key's guardrails to put back, may be empty (e.g. litellm.add_key_guardrails' "
        "previous_guardrails_json)"
    )


def _permission(info: dict[str, Any]) -> dict[str, Any]:
    found = info.get("object_permission")
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if k != "object_permission_id" and v is not None}


def _blocked(info: dict[str, Any]) -> list[str]:
    return sorted(str(t) for t in _permission(info).get("blocked_tools") or [])


def _guardrails(info: dict[str, Any]) -> list[str]:
    metadata = info.get("metadata") if isinstance(info.get("metadata"), dict) else {}
    found = (metadata or {}).get("guardrails")
    return sorted(str(g) for g in found) if isinstance(found, list) else []


def _read(ctx: ActionContext, key_hash: str) -> dict[str, Any] | None:
    return LITELLM.client(ctx.settings).key_info(key_hash)


def _set_blocked(ctx: ActionContext, inputs: KeyTools, info: dict[str, Any], blocked: list[str]) -> None:
    LITELLM.client(ctx.settings).set_object_permission(inputs.key_hash, {**_permission(info), "blocked_tools": blocked})


def _probe_tools(blocked: bool) -> Any:
    def probe(ctx: ActionContext, inputs: KeyTools, outcome: StepOutcome) -> ProbeResult:
        info = _read(ctx, inputs.key_hash)
        if info is None:
            return ProbeResult(ok=False, detail="the gateway no longer knows the key")
        now = set(_blocked(info))
        good = set(inputs.tools) <= now if blocked else not set(inputs.tools) & now
        return ProbeResult(ok=good, detail=f"/key/info lists blocked tools {sorted(now) or 'none'}")

    return probe


@action(
    "litellm.block_tools",
    effect=Effect.changing,
    inputs=KeyTools,
    summary="Block MCP tools for the key at the LLM gateway (object_permission.blocked_tools): every call of them "
    "through the gateway is refused",
    inverse="litellm.unblock_tools",
    probe=_probe_tools(blocked=True),
)
def block_tools(ctx: ActionContext, inputs: KeyTools) -> StepOutcome:
    info = _read(ctx, inputs.key_hash)
    if info is None:
        return absent("the gateway has no such key; no tool to block for it")
    previous = _blocked(info)
    wanted = sorted(set(previous) | set(inputs.tools))
    remembered = {"previous_blocked_tools": previous, "previous_blocked_tools_json": json.dumps(previous)}
    if wanted == previous:
        return ok(f"tools {', '.join(inputs.tools)} were already blocked for the key", already=True, **remembered)
    _set_blocked(ctx, inputs, info, wanted)
    return ok(f"tools {', '.join(inputs.tools)} blocked for the key at the gateway", already=False, **remembered)


@action(
    "litellm.unblock_tools",
    effect=Effect.changing,
    inputs=KeyTools,
    summary="Allow the MCP tools for the key again at the LLM gateway (the inverse of litellm.block_tools)",
    inverse="litellm.block_tools",
    probe=_probe_tools(blocked=False),
)
def unblock_tools(ctx: ActionContext, inputs: KeyTools) -> StepOutcome:
    info = _read(ctx, inputs.key_hash)
    if info is None:
        return absent("the gateway has no such key; no tool to unblock for it")
    previous = _blocked(info)
    wanted = [t for t in previous if t not in inputs.tools]
    if wanted == previous:
        return ok(f"tools {', '.join(inputs.tools)} were not blocked for the key", already=True)
    _set_blocked(ctx, inputs, info, wanted)
    return ok(f"tools {', '.join(inputs.tools)} allowed again for the key", already=False)


def _probe_guardrails(ctx: ActionContext, inputs: KeyGuardrails, outcome: StepOutcome) -> ProbeResult:
    info = _read(ctx, inputs.key_hash)
    if info is None:
        return ProbeResult(ok=False, detail="the gateway no longer knows the key")
    now = _guardrails(info)
    return ProbeResult(ok=set(inputs.guardrails) <= set(now), detail=f"/key/info lists guardrails {now or 'none'}")


def _probe_guardrails_restored(ctx: ActionContext, inputs: PreviousGuardrails, outcome: StepOutcome) -> ProbeResult:
    info = _read(ctx, inputs.key_hash)
    if info is None:
        return ProbeResult(ok=False, detail="the gateway no longer knows the key")
    now = _guardrails(info)
    return ProbeResult(ok=now == sorted(inputs.guardrails), detail=f"/key/info lists guardrails {now or 'none'}")


@action(
    "litellm.add_key_guardrails",
    effect=Effect.changing,
    inputs=KeyGuardrails,
    summary="Run these guardrails (configured on the proxy) for every request of the key at the LLM gateway, "
    "besides those it has",
    inverse="litellm.restore_key_guardrails",
    probe=_probe_guardrails,
)
def add_key_guardrails(ctx: ActionContext, inputs: KeyGuardrails) -> StepOutcome:
    info = _read(ctx, inputs.key_hash)
    if info is None:
        return absent("the gateway has no such key; no guardrail to add")
    previous = _guardrails(info)
    wanted = sorted(set(previous) | set(inputs.guardrails))
    remembered = {"previous_guardrails": previous, "previous_guardrails_json": json.dumps(previous)}
    if wanted == previous:
        return ok(f"guardrails {', '.join(inputs.guardrails)} already ran for the key", already=True, **remembered)
    try:
        LITELLM.client(ctx.settings).set_guardrails(inputs.key_hash, wanted)
    except ConnectorError as exc:
        if exc.status == 404:
            return absent("the gateway has no such key; no guardrail to add")
        raise
    return ok(f"guardrails {', '.join(wanted)} now run for the key at the gateway", already=False, **remembered)


@action(
    "litellm.restore_key_guardrails",
    effect=Effect.changing,
    inputs=PreviousGuardrails,
    summary="Put the key's previous guardrails back (the inverse of litellm.add_key_guardrails, with its "
    "previous_guardrails)",
    inverse="litellm.add_key_guardrails",
    probe=_probe_guardrails_restored,
)
def restore_key_guardrails(ctx: ActionContext, inputs: PreviousGuardrails) -> StepOutcome:
    if _read(ctx, inputs.key_hash) is None:
        return absent("the gateway has no such key; nothing to restore")
    LITELLM.client(ctx.settings).set_guardrails(inputs.key_hash, sorted(inputs.guardrails))
    return ok(f"the key's guardrails are back to {', '.join(sorted(inputs.guardrails)) or 'none'}")
