"""Actions on agent and service credentials in OpenBao / HashiCorp Vault: tokens (by
accessor), leases (by prefix) and KV v2 secret versions. Each family has a read-only
evidence collector with the same asset as its destructive action."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import Field

from aisoar.actions import Effect
from connectors.vault import (
    ACCESSOR_PATTERN,
    KV_MOUNT_PATTERN,
    KV_PATH_PATTERN,
    LEASE_PREFIX_PATTERN,
    kv_asset,
)
from connectors.vault import SYSTEM as VAULT
from tasks.base import ActionContext, AssetInputs, ProbeResult, StepOutcome, ok
from tasks.registry import action

MAX_LEASE_DETAILS = 20

Accessor = Annotated[
    str,
    Field(min_length=8, max_length=128, pattern=ACCESSOR_PATTERN, description="the token's accessor (not the token)"),
]
LeasePrefix = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        pattern=LEASE_PREFIX_PATTERN,
        description="lease id prefix, e.g. database/creds/agent-role or auth/token/create/agent-role",
    ),
]
KvPath = Annotated[
    str, Field(min_length=1, max_length=256, pattern=KV_PATH_PATTERN, description="path in the KV v2 mount")
]
KvMount = Annotated[str, Field(min_length=1, max_length=128, pattern=KV_MOUNT_PATTERN)]


class TokenAccessor(AssetInputs):
    accessor: Accessor

    @property
    def asset(self) -> str:
        return f"vault:token-accessor:{self.accessor}"


class LeasePrefixInputs(AssetInputs):
    prefix: LeasePrefix

    @property
    def asset(self) -> str:
        return f"vault:lease-prefix:{self.prefix.rstrip('/')}"


class KvSecret(AssetInputs):
    path: KvPath
    mount: KvMount | None = Field(None, description="KV v2 mount; default: AISOAR_VAULT_KV_MOUNT")

    @property
    def asset(self) -> str:
        # "@default" (never a valid mount name) stands for the configured mount.
        return kv_asset(self.mount or "@default", self.path)


class KvSecretVersion(KvSecret):
    version: Annotated[int, Field(ge=1, le=1_000_000)]


def _now() -> str:
    return datetime.now(UTC).isoformat()


# --- tokens ---------------------------------------------------------------------------


@action(
    "vault.collect_token_evidence",
    effect=Effect.read_only,
    inputs=TokenAccessor,
    summary="Preserve the token's metadata (display name, policies, creation, ttl, entity, path, meta) by accessor",
    collects_evidence=True,
)
def collect_token_evidence(ctx: ActionContext, inputs: TokenAccessor) -> StepOutcome:
    info = VAULT.client(ctx.settings).lookup_accessor(inputs.accessor)
    document = {
        "collected_at": _now(),
        "system": "vault",
        "accessor": inputs.accessor,
        "found": info is not None,
        "token": info or {},  # lookup-accessor never returns the token itself; fields are allow-listed
    }
    sha256 = ctx.keep(document, "Vault token metadata (by accessor)", asset=inputs.asset)
    if info is None:
        return ok("Vault does not know the accessor (recorded as evidence)", found=False, evidence_sha256=sha256)
    return ok(
        f"token metadata preserved: {info.get('display_name')}, policies {', '.join(info.get('policies') or [])}",
        found=True,
        display_name=info.get("display_name"),
        policies=list(info.get("policies") or []),
        entity_id=info.get("entity_id") or None,
        path=info.get("path"),
        ttl=info.get("ttl"),
        evidence_sha256=sha256,
    )


def _probe_token_revoked(ctx: ActionContext, inputs: TokenAccessor, outcome: StepOutcome) -> ProbeResult:
    info = VAULT.client(ctx.settings).lookup_accessor(inputs.accessor)
    if info is None:
        return ProbeResult(ok=True, detail=f"Vault no longer knows accessor {inputs.accessor}: the token is revoked")
    return ProbeResult(ok=False, detail=f"Vault still has a live token with accessor {inputs.accessor}")


@action(
    "vault.revoke_token_accessor",
    effect=Effect.destructive,
    inputs=TokenAccessor,
    summary="Revoke the token by its accessor, with its child tokens and leases (irreversible)",
    probe=_probe_token_revoked,
)
def revoke_token_accessor(ctx: ActionContext, inputs: TokenAccessor) -> StepOutcome:
    result = VAULT.client(ctx.settings).revoke_accessor(inputs.accessor)
    if result.already:
        return ok(f"token {inputs.accessor} was already revoked: {result.detail}", already=True)
    return ok(f"token {inputs.accessor} revoked in Vault: {result.detail}", already=False)


# --- leases ---------------------------------------------------------------------------


@action(
    "vault.collect_lease_evidence",
    effect=Effect.read_only,
    inputs=LeasePrefixInputs,
    summary="Preserve the list of leases under a prefix (with the times of the first ones) as evidence",
    collects_evidence=True,
)
def collect_lease_evidence(ctx: ActionContext, inputs: LeasePrefixInputs) -> StepOutcome:
    vault = VAULT.client(ctx.settings)
    listing = vault.list_leases(inputs.prefix)
    details = [vault.lease_details(lease_id) for lease_id in listing.lease_ids[:MAX_LEASE_DETAILS]]
    document = {
        "collected_at": _now(),
        "system": "vault",
        "prefix": inputs.prefix,
        "lease_count": len(listing.lease_ids),
        "truncated": listing.truncated,
        "lease_ids": listing.lease_ids,
        "details": [d for d in details if d is not None],
    }
    sha256 = ctx.keep(document, "Vault leases under a prefix", asset=inputs.asset)
    more = "+" if listing.truncated else ""
    return ok(
        f"{len(listing.lease_ids)}{more} leases under {inputs.prefix} preserved",
        lease_count=len(listing.lease_ids),
        truncated=listing.truncated,
        evidence_sha256=sha256,
    )


def _probe_no_leases(ctx: ActionContext, inputs: LeasePrefixInputs, outcome: StepOutcome) -> ProbeResult:
    listing = VAULT.client(ctx.settings).list_leases(inputs.prefix, limit=10)
    if not listing.lease_ids:
        return ProbeResult(ok=True, detail=f"Vault lists no lease under {inputs.prefix}")
    more = "+" if listing.truncated else ""
    return ProbeResult(
        ok=False, detail=f"Vault still lists {len(listing.lease_ids)}{more} leases under {inputs.prefix}"
    )


@action(
    "vault.revoke_lease_prefix",
    effect=Effect.destructive,
    inputs=LeasePrefixInputs,
    summary="Revoke every lease under the prefix: dynamic secrets and tokens issued there (irreversible)",
    probe=_probe_no_leases,
)
def revoke_lease_prefix(ctx: ActionContext, inputs: LeasePrefixInputs) -> StepOutcome:
    vault = VAULT.client(ctx.settings)
    before = vault.list_leases(inputs.prefix)
    vault.revoke_lease_prefix(inputs.prefix)  # revoking an empty prefix is harmless
    if not before.lease_ids:
        return ok(f"no lease was left under {inputs.prefix}: already revoked", already=True, revoked=0)
    count = f"{len(before.lease_ids)}{'+' if before.truncated else ''}"
    return ok(f"{count} leases under {inputs.prefix} revoked in Vault", already=False, revoked=len(before.lease_ids))


# --- KV v2 secret versions ------------------------------------------------------------


@action(
    "vault.collect_secret_metadata",
    effect=Effect.read_only,
    inputs=KvSecret,
    summary="Preserve a KV v2 secret's metadata (versions, created/deleted/destroyed); never its data",
    collects_evidence=True,
)
def collect_secret_metadata(ctx: ActionContext, inputs: KvSecret) -> StepOutcome:
    vault = VAULT.client(ctx.settings)
    metadata = vault.secret_metadata(inputs.path, inputs.mount)
    mount = inputs.mount or vault.kv_mount
    document = {
        "collected_at": _now(),
        "system": "vault",
        "mount": mount,
        "path": inputs.path,
        "found": metadata is not None,
        "metadata": metadata or {},
    }
    sha256 = ctx.keep(document, f"Vault KV metadata of {mount}/{inputs.path}", asset=inputs.asset)
    if metadata is None:
        return ok(f"no secret at {mount}/{inputs.path} (recorded as evidence)", found=False, evidence_sha256=sha256)
    return ok(
        f"metadata of {mount}/{inputs.path} preserved: current version {metadata.get('current_version')}",
        found=True,
        current_version=metadata.get("current_version"),
        versions=sorted(int(v) for v in metadata.get("versions", {})),
        evidence_sha256=sha256,
    )


def _probe_destroyed(ctx: ActionContext, inputs: KvSecretVersion, outcome: StepOutcome) -> ProbeResult:
    metadata = VAULT.client(ctx.settings).secret_metadata(inputs.path, inputs.mount)
    entry = (metadata or {}).get("versions", {}).get(str(inputs.version))
    if entry is None:
        return ProbeResult(ok=False, detail=f"the metadata no longer lists version {inputs.version} of {inputs.path}")
    if entry.get("destroyed"):
        return ProbeResult(ok=True, detail=f"the metadata shows version {inputs.version} of {inputs.path} destroyed")
    return ProbeResult(ok=False, detail=f"version {inputs.version} of {inputs.path} is not destroyed")


@action(
    "vault.destroy_secret_version",
    effect=Effect.destructive,
    inputs=KvSecretVersion,
    summary="Permanently destroy one version of a KV v2 secret (its data cannot be recovered)",
    probe=_probe_destroyed,
)
def destroy_secret_version(ctx: ActionContext, inputs: KvSecretVersion) -> StepOutcome:
    vault = VAULT.client(ctx.settings)
    result = vault.destroy_version(inputs.path, inputs.version, inputs.mount)
    where = f"{inputs.mount or vault.kv_mount}/{inputs.path}"
    if result.already:
        return ok(f"version {inputs.version} of {where} was already destroyed", already=True)
    return ok(f"version {inputs.version} of {where} destroyed", already=False)
