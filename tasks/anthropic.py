"""Actions at Anthropic (Admin API): organization API keys."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from pydantic import Field

from aisoar.actions import Effect
from connectors.anthropic import SYSTEM as ANTHROPIC
from connectors.errors import ConnectorError
from tasks.base import ActionContext, AssetInputs, ProbeResult, StepOutcome, absent, ok
from tasks.registry import action


class AnthropicKey(AssetInputs):
    key_id: Annotated[
        str, Field(pattern=r"^apikey_[A-Za-z0-9]{1,64}$", description="the Admin API's id of the key (apikey_...)")
    ]

    @property
    def asset(self) -> str:
        return f"anthropic:api-key:{self.key_id}"


@action(
    "anthropic.collect_key_evidence",
    effect=Effect.read_only,
    inputs=AnthropicKey,
    summary="Preserve the API key's record at Anthropic (name, workspace, creator, hint, status) as evidence",
    collects_evidence=True,
)
def collect_anthropic_key_evidence(ctx: ActionContext, inputs: AnthropicKey) -> StepOutcome:
    record = ANTHROPIC.client(ctx.settings).get_key(inputs.key_id)
    document = {
        "collected_at": datetime.now(UTC).isoformat(),
        "system": "anthropic",
        "key_id": inputs.key_id,
        "found": record is not None,
        "record": record or {},  # a partial hint only, never the key
    }
    sha256 = ctx.keep(document, "Anthropic API key record", asset=inputs.asset)
    if record is None:
        return ok("Anthropic has no such API key (recorded as evidence)", found=False, evidence_sha256=sha256)
    return ok(
        f"Anthropic key record preserved (status {record.get('status')})",
        found=True,
        key_status=record.get("status"),  # not "status": the runner gives every step's outcome that name
        name=record.get("name"),
        workspace_id=record.get("workspace_id"),
        evidence_sha256=sha256,
    )


def _probe_anthropic_status(expected: str) -> Callable[[ActionContext, AnthropicKey, StepOutcome], ProbeResult]:
    refused = {"inactive", "archived"}

    def probe(ctx: ActionContext, inputs: AnthropicKey, outcome: StepOutcome) -> ProbeResult:
        record = ANTHROPIC.client(ctx.settings).get_key(inputs.key_id)
        if record is None:
            return ProbeResult(ok=False, detail=f"Anthropic no longer knows key {inputs.key_id}")
        status = str(record.get("status"))
        good = status in refused if expected == "inactive" else status == "active"
        return ProbeResult(ok=good, detail=f"Anthropic reports key {inputs.key_id} as {status}")

    return probe


def _set_anthropic_status(ctx: ActionContext, inputs: AnthropicKey, status: str) -> StepOutcome:
    admin = ANTHROPIC.client(ctx.settings)
    record = admin.get_key(inputs.key_id)
    verb = "activate" if status == "active" else "deactivate"
    if record is None:
        return absent(f"Anthropic has no key {inputs.key_id}; nothing to {verb}")
    current = record.get("status")
    if current == "archived":
        if status == "inactive":
            return ok(f"key {inputs.key_id} is archived at Anthropic: already refused for good", already=True)
        raise ConnectorError("Anthropic Admin API", "activate API key", inputs.key_id, 400, "the key is archived")
    if current == status:
        return ok(f"key {inputs.key_id} was already {status} at Anthropic", already=True, previous_status=current)
    admin.set_status(inputs.key_id, "active" if status == "active" else "inactive")
    return ok(f"key {inputs.key_id} {verb}d at Anthropic", already=False, previous_status=current)


@action(
    "anthropic.deactivate_key",
    effect=Effect.changing,
    inputs=AnthropicKey,
    summary="Deactivate the API key at Anthropic so every request with it is refused (reversible)",
    inverse="anthropic.activate_key",
    probe=_probe_anthropic_status("inactive"),
)
def deactivate_anthropic_key(ctx: ActionContext, inputs: AnthropicKey) -> StepOutcome:
    return _set_anthropic_status(ctx, inputs, "inactive")


@action(
    "anthropic.activate_key",
    effect=Effect.changing,
    inputs=AnthropicKey,
    summary="Activate the API key at Anthropic again (the inverse of anthropic.deactivate_key)",
    inverse="anthropic.deactivate_key",
    probe=_probe_anthropic_status("active"),
)
def activate_anthropic_key(ctx: ActionContext, inputs: AnthropicKey) -> StepOutcome:
    return _set_anthropic_status(ctx, inputs, "active")
