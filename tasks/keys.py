"""Actions on LLM API keys: at the gateway (LiteLLM) and at the provider (OpenAI)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from pydantic import Field

from aisoar.actions import Effect
from connectors.errors import ConnectorError
from tasks import connect
from tasks.base import ActionContext, AssetInputs, ProbeResult, StepOutcome, ok, skipped
from tasks.registry import action

KeyHash = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the key (LiteLLM's key id)")]


class GatewayKey(AssetInputs):
    key_hash: KeyHash

    @property
    def asset(self) -> str:
        return f"litellm:key:{self.key_hash}"


class ProviderKey(AssetInputs):
    project_id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")]
    key_id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")]

    @property
    def asset(self) -> str:
        return f"openai:project-key:{self.project_id}/{self.key_id}"


@action(
    "gateway.collect_key_evidence",
    effect=Effect.read_only,
    inputs=GatewayKey,
    summary="Preserve the key's gateway record (spend, models, status) as evidence",
    collects_evidence=True,
)
def collect_key_evidence(ctx: ActionContext, inputs: GatewayKey) -> StepOutcome:
    info = connect.gateway(ctx.settings).key_info(inputs.key_hash)
    document = {
        "collected_at": datetime.now(UTC).isoformat(),
        "system": "litellm",
        "key_sha256": inputs.key_hash,
        "found": info is not None,
        "info": {k: v for k, v in (info or {}).items() if k != "token"},
    }
    sha256 = ctx.keep(document, "LLM gateway record of the key", asset=inputs.asset)
    if info is None:
        return ok("the gateway has no such key (recorded as evidence)", found=False, evidence_sha256=sha256)
    return ok(
        f"gateway record preserved: spend {info.get('spend', 0)}, blocked {bool(info.get('blocked'))}",
        found=True,
        spend=info.get("spend"),
        blocked=bool(info.get("blocked")),
        key_alias=info.get("key_alias"),
        evidence_sha256=sha256,
    )


def _probe_blocked(expected: bool) -> Callable[[ActionContext, GatewayKey, StepOutcome], ProbeResult]:
    def probe(ctx: ActionContext, inputs: GatewayKey, outcome: StepOutcome) -> ProbeResult:
        info = connect.gateway(ctx.settings).key_info(inputs.key_hash)
        if info is None:
            return ProbeResult(ok=False, detail="the gateway no longer knows the key")
        blocked = bool(info.get("blocked"))
        word = "refused (blocked)" if blocked else "accepted (not blocked)"
        return ProbeResult(ok=blocked is expected, detail=f"the gateway reports the key as {word}")

    return probe


def _set_blocked(ctx: ActionContext, inputs: GatewayKey, blocked: bool) -> StepOutcome:
    gateway = connect.gateway(ctx.settings)
    verb = "block" if blocked else "unblock"
    try:  # doing it twice is harmless, so there is no read first
        (gateway.block_key if blocked else gateway.unblock_key)(inputs.key_hash)
    except ConnectorError as exc:
        if exc.status == 404:
            return skipped(f"the gateway has no such key; nothing to {verb}")
        raise
    return ok(f"key {verb}ed at the gateway")


@action(
    "gateway.block_key",
    effect=Effect.changing,
    inputs=GatewayKey,
    summary="Block the key at the LLM gateway so every request with it is refused",
    inverse="gateway.unblock_key",
    probe=_probe_blocked(True),
)
def block_key(ctx: ActionContext, inputs: GatewayKey) -> StepOutcome:
    return _set_blocked(ctx, inputs, blocked=True)


@action(
    "gateway.unblock_key",
    effect=Effect.changing,
    inputs=GatewayKey,
    summary="Unblock the key at the LLM gateway (the inverse of gateway.block_key)",
    inverse="gateway.block_key",
    probe=_probe_blocked(False),
)
def unblock_key(ctx: ActionContext, inputs: GatewayKey) -> StepOutcome:
    return _set_blocked(ctx, inputs, blocked=False)


@action(
    "openai.collect_key_evidence",
    effect=Effect.read_only,
    inputs=ProviderKey,
    summary="Preserve the project key's record at OpenAI (name, owner, created, last used) as evidence",
    collects_evidence=True,
)
def collect_provider_key_evidence(ctx: ActionContext, inputs: ProviderKey) -> StepOutcome:
    record = connect.openai_admin(ctx.settings).get_project_key(inputs.project_id, inputs.key_id)
    document = {
        "collected_at": datetime.now(UTC).isoformat(),
        "system": "openai",
        "project_id": inputs.project_id,
        "key_id": inputs.key_id,
        "found": record is not None,
        "record": record or {},  # the API shows a redacted value only, never the key
    }
    sha256 = ctx.keep(document, "OpenAI project key record", asset=inputs.asset)
    if record is None:
        return ok("OpenAI has no such project key (recorded as evidence)", found=False, evidence_sha256=sha256)
    return ok(
        f"OpenAI key record preserved (last used {record.get('last_used_at') or 'never'})",
        found=True,
        evidence_sha256=sha256,
    )


def _probe_deleted(ctx: ActionContext, inputs: ProviderKey, outcome: StepOutcome) -> ProbeResult:
    found = connect.openai_admin(ctx.settings).get_project_key(inputs.project_id, inputs.key_id)
    if found is None:
        return ProbeResult(ok=True, detail=f"OpenAI no longer lists key {inputs.key_id} in {inputs.project_id}")
    return ProbeResult(ok=False, detail=f"OpenAI still lists key {inputs.key_id} in {inputs.project_id}")


@action(
    "openai.delete_project_key",
    effect=Effect.destructive,
    inputs=ProviderKey,
    summary="Delete the project API key at OpenAI (irreversible: the key cannot be restored)",
    probe=_probe_deleted,
)
def delete_project_key(ctx: ActionContext, inputs: ProviderKey) -> StepOutcome:
    deleted = connect.openai_admin(ctx.settings).delete_project_key(inputs.project_id, inputs.key_id)
    if not deleted:
        return ok(f"key {inputs.key_id} was already deleted at OpenAI", already=True)
    return ok(f"key {inputs.key_id} deleted at OpenAI (project {inputs.project_id})", already=False)
