"""Actions on LLM API keys: at the gateway (LiteLLM) and at the providers (OpenAI project keys
and service accounts, Anthropic organization API keys)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field

from aisoar.actions import Effect
from connectors.errors import ConnectorError
from connectors.litellm import MAX_LOG_ROWS
from tasks import connect
from tasks.base import ActionContext, AssetInputs, ProbeResult, StepOutcome, absent, ok
from tasks.registry import action

KeyHash = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the key (LiteLLM's key id)")]
# OpenAI project, key and service-account ids
OpenAIId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")]


class GatewayKey(AssetInputs):
    key_hash: KeyHash

    @property
    def asset(self) -> str:
        return f"litellm:virtual-key:{self.key_hash}"


class ProviderKey(AssetInputs):
    project_id: OpenAIId
    key_id: OpenAIId

    @property
    def asset(self) -> str:
        return f"openai:project-key:{self.project_id}/{self.key_id}"


@action(
    "gateway.collect_key_evidence",
    effect=Effect.read_only,
    inputs=GatewayKey,
    summary="Preserve the key's gateway record (spend, models, limits, status) and its request logs as evidence",
    collects_evidence=True,
)
def collect_key_evidence(ctx: ActionContext, inputs: GatewayKey) -> StepOutcome:
    gateway = connect.gateway(ctx.settings)
    info = gateway.key_info(inputs.key_hash)
    document = {
        "collected_at": datetime.now(UTC).isoformat(),
        "system": "litellm",
        "key_sha256": inputs.key_hash,
        "found": info is not None,
        "info": {k: v for k, v in (info or {}).items() if k != "token"},
    }
    sha256 = ctx.keep(document, "LLM gateway record of the key", asset=inputs.asset)
    logs = _collect_request_logs(ctx, inputs)
    if info is None:
        return ok(
            f"the gateway has no such key (recorded as evidence); {logs['request_logs_note']}",
            found=False,
            evidence_sha256=sha256,
            **logs,
        )
    return ok(
        f"gateway record preserved: spend {info.get('spend', 0)}, blocked {bool(info.get('blocked'))}; "
        f"{logs['request_logs_note']}",
        found=True,
        spend=info.get("spend"),
        blocked=bool(info.get("blocked")),
        key_alias=info.get("key_alias"),
        evidence_sha256=sha256,
        **logs,
    )


def _collect_request_logs(ctx: ActionContext, inputs: GatewayKey) -> dict[str, Any]:
    """Keep the key's last request log rows as evidence.

    The rows may hold prompts and answers: attacker-controlled text, stored as JSON data
    and never rendered; only counts go into the step's output and summary. A gateway that
    cannot serve its logs does not fail the step: the key record is already kept, and the
    output says why the logs are missing.
    """
    try:
        rows, total = connect.gateway(ctx.settings).request_logs(inputs.key_hash, MAX_LOG_ROWS)
    except ConnectorError as exc:
        return {
            "request_logs": None,
            "request_logs_sha256": None,
            "request_logs_note": f"request logs not collected ({exc.status}: {exc.detail[:120]})",
        }
    rows, redacted = _without_credentials(rows)
    document = {
        "collected_at": datetime.now(UTC).isoformat(),
        "system": "litellm",
        "source": "GET /spend/logs",
        "credential_fields_redacted": redacted,
        "key_sha256": inputs.key_hash,
        "rows_returned_by_gateway": total,
        "rows_kept": len(rows),
        "truncated_to_last": MAX_LOG_ROWS if total > len(rows) else None,
        "rows": rows,  # hostile text: data only
    }
    sha256 = ctx.keep(document, "LLM gateway request logs of the key", asset=inputs.asset)
    more = f" (last {len(rows)} of {total})" if total > len(rows) else ""
    return {
        "request_logs": len(rows),
        "request_logs_sha256": sha256,
        "request_logs_note": f"{len(rows)} request log row(s) preserved{more}",
    }


CREDENTIAL_FIELDS = frozenset({"authorization", "x-api-key", "api-key", "x-litellm-api-key", "proxy-authorization"})


def _without_credentials(value: Any) -> tuple[Any, int]:
    """The value with credential-carrying fields (request headers a proxy may log) replaced,
    and how many were; everything else is kept as it was, hostile text included."""
    if isinstance(value, dict):
        count = 0
        clean: dict[str, Any] = {}
        for key, item in value.items():
            if str(key).lower() in CREDENTIAL_FIELDS and item:
                clean[key] = "[redacted by aisoar]"
                count += 1
            else:
                clean[key], found = _without_credentials(item)
                count += found
        return clean, count
    if isinstance(value, list):
        items = [_without_credentials(item) for item in value]
        return [item for item, _ in items], sum(found for _, found in items)
    return value, 0


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
            return absent(f"the gateway has no such key; nothing to {verb}")
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


# -- OpenAI project service accounts --------------------------------------------------
class ServiceAccount(AssetInputs):
    project_id: OpenAIId
    service_account_id: OpenAIId

    @property
    def asset(self) -> str:
        return f"openai:service-account:{self.project_id}/{self.service_account_id}"


@action(
    "openai.collect_service_account_evidence",
    effect=Effect.read_only,
    inputs=ServiceAccount,
    summary="Preserve the project service account's record and the keys it owns at OpenAI as evidence",
    collects_evidence=True,
)
def collect_service_account_evidence(ctx: ActionContext, inputs: ServiceAccount) -> StepOutcome:
    admin = connect.openai_admin(ctx.settings)
    record = admin.get_service_account(inputs.project_id, inputs.service_account_id)
    keys = admin.service_account_keys(inputs.project_id, inputs.service_account_id) if record is not None else []
    document = {
        "collected_at": datetime.now(UTC).isoformat(),
        "system": "openai",
        "project_id": inputs.project_id,
        "service_account_id": inputs.service_account_id,
        "found": record is not None,
        "record": record or {},
        "keys": keys,  # redacted values only: the API never shows a key again
    }
    sha256 = ctx.keep(document, "OpenAI project service account and its keys", asset=inputs.asset)
    if record is None:
        return ok("OpenAI has no such service account (recorded as evidence)", found=False, evidence_sha256=sha256)
    return ok(
        f"OpenAI service account record preserved with its {len(keys)} key(s)",
        found=True,
        name=record.get("name"),
        role=record.get("role"),
        key_ids=[str(k.get("id")) for k in keys],
        evidence_sha256=sha256,
    )


def _probe_account_deleted(ctx: ActionContext, inputs: ServiceAccount, outcome: StepOutcome) -> ProbeResult:
    admin = connect.openai_admin(ctx.settings)
    listed = [a.get("id") for a in admin.list_service_accounts(inputs.project_id)]
    # the listing stops after MAX_PAGES: read the account itself too
    if inputs.service_account_id in listed or (
        admin.get_service_account(inputs.project_id, inputs.service_account_id) is not None
    ):
        return ProbeResult(ok=False, detail=f"OpenAI still lists service account {inputs.service_account_id}")
    remaining = admin.service_account_keys(inputs.project_id, inputs.service_account_id)
    if remaining:
        return ProbeResult(
            ok=False, detail=f"service account gone but OpenAI still lists {len(remaining)} key(s) it owned"
        )
    return ProbeResult(
        ok=True,
        detail=f"OpenAI no longer lists service account {inputs.service_account_id} nor any key it owned",
    )


@action(
    "openai.delete_service_account",
    effect=Effect.destructive,
    inputs=ServiceAccount,
    summary="Delete the project service account at OpenAI, and with it every key it owns (irreversible)",
    probe=_probe_account_deleted,
)
def delete_service_account(ctx: ActionContext, inputs: ServiceAccount) -> StepOutcome:
    deleted = connect.openai_admin(ctx.settings).delete_service_account(inputs.project_id, inputs.service_account_id)
    if not deleted:
        return ok(f"service account {inputs.service_account_id} was already deleted at OpenAI", already=True)
    return ok(
        f"service account {inputs.service_account_id} and its keys deleted at OpenAI (project {inputs.project_id})",
        already=False,
    )


# -- Anthropic organization API keys --------------------------------------------------
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
    record = connect.anthropic_admin(ctx.settings).get_key(inputs.key_id)
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
        record = connect.anthropic_admin(ctx.settings).get_key(inputs.key_id)
        if record is None:
            return ProbeResult(ok=False, detail=f"Anthropic no longer knows key {inputs.key_id}")
        status = str(record.get("status"))
        good = status in refused if expected == "inactive" else status == "active"
        return ProbeResult(ok=good, detail=f"Anthropic reports key {inputs.key_id} as {status}")

    return probe


def _set_anthropic_status(ctx: ActionContext, inputs: AnthropicKey, status: str) -> StepOutcome:
    admin = connect.anthropic_admin(ctx.settings)
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
