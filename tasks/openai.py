"""Actions at OpenAI (Admin API): project API keys and project service accounts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import Field

from aisoar.actions import Effect
from connectors.openai import SYSTEM as OPENAI
from tasks.base import ActionContext, AssetInputs, ProbeResult, StepOutcome, ok
from tasks.registry import action

# OpenAI project, key and service-account ids
OpenAIId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")]


class ProviderKey(AssetInputs):
    project_id: OpenAIId
    key_id: OpenAIId

    @property
    def asset(self) -> str:
        return f"openai:project-key:{self.project_id}/{self.key_id}"


@action(
    "openai.collect_key_evidence",
    effect=Effect.read_only,
    inputs=ProviderKey,
    summary="Preserve the project key's record at OpenAI (name, owner, created, last used) as evidence",
    collects_evidence=True,
)
def collect_provider_key_evidence(ctx: ActionContext, inputs: ProviderKey) -> StepOutcome:
    record = OPENAI.client(ctx.settings).get_project_key(inputs.project_id, inputs.key_id)
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
    found = OPENAI.client(ctx.settings).get_project_key(inputs.project_id, inputs.key_id)
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
    deleted = OPENAI.client(ctx.settings).delete_project_key(inputs.project_id, inputs.key_id)
    if not deleted:
        return ok(f"key {inputs.key_id} was already deleted at OpenAI", already=True)
    return ok(f"key {inputs.key_id} deleted at OpenAI (project {inputs.project_id})", already=False)


# -- project service accounts --------------------------------------------------
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
    admin = OPENAI.client(ctx.settings)
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
    admin = OPENAI.client(ctx.settings)
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
    deleted = OPENAI.client(ctx.settings).delete_service_account(inputs.project_id, inputs.service_account_id)
    if not deleted:
        return ok(f"service account {inputs.service_account_id} was already deleted at OpenAI", already=True)
    return ok(
        f"service account {inputs.service_account_id} and its keys deleted at OpenAI (project {inputs.project_id})",
        already=False,
    )
