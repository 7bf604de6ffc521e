"""Actions on a model registry (MLflow) for a tampered or backdoored model (CoSAI: model
backdoor, supply chain): preserve the suspect version's record and the digests of its files,
then pin the serving alias (``production``) to a known-good version, remembering the version
it pointed to so the pin can be undone."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field, field_validator

from aisoar.actions import Effect
from connectors.errors import ConnectorError
from connectors.mlflow import (
    ALIAS_PATTERN,
    MODEL_NAME_PATTERN,
    RESERVED_ALIAS,
    VERSION_PATTERN,
    version_digest,
)
from connectors.mlflow import SYSTEM as MLFLOW
from tasks.base import ActionContext, AssetInputs, ProbeResult, StepOutcome, ok, refused
from tasks.registry import action

ModelName = Annotated[
    str, Field(pattern=MODEL_NAME_PATTERN, description="the registered model's name (letters, digits, _ . -)")
]
Alias = Annotated[
    str, Field(pattern=ALIAS_PATTERN, description="a model alias, e.g. production (not latest, not v<N>)")
]
Version = Annotated[str, Field(pattern=VERSION_PATTERN, description="a model version number, e.g. 3")]


def model_asset(name: str) -> str:
    return f"mlflow:model:{name}"


def _empty_is_none(value: Any) -> Any:
    return None if value in ("", "None", "none", "null") else value


class _ModelInputs(AssetInputs):
    name: ModelName
    alias: Alias = "production"

    @field_validator("alias")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if RESERVED_ALIAS.match(value):
            raise ValueError(f"{value!r} is reserved by MLflow (latest, v<N>): name the serving alias")
        return value

    @property
    def asset(self) -> str:
        return model_asset(self.name)


class ModelEvidence(_ModelInputs):
    """The model, the alias that serves it, and the suspect version (default: the version the
    alias points to, else the newest)."""

    version: Version | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _no_version(cls, value: Any) -> Any:
        return _empty_is_none(value)


class AliasPin(_ModelInputs):
    """Pin ``alias`` of model ``name`` to the known-good ``version``."""

    version: Version


class AliasRestore(_ModelInputs):
    """Put ``alias`` back on ``previous_version`` (as recorded by mlflow.pin_alias; none: the
    alias was not set and is deleted). With ``pinned_version``, an alias someone re-pointed
    since the pin is left as it is."""

    previous_version: Version | None = None
    pinned_version: Version | None = None

    @field_validator("previous_version", "pinned_version", mode="before")
    @classmethod
    def _no_version(cls, value: Any) -> Any:
        return _empty_is_none(value)


@action(
    "mlflow.collect_model_evidence",
    effect=Effect.read_only,
    inputs=ModelEvidence,
    summary="Preserve the registered model, its aliases, the suspect version's record and its digest, and a "
    "sha256 of each of the version's files served by the tracking server",
    collects_evidence=True,
)
def collect_model_evidence(ctx: ActionContext, inputs: ModelEvidence) -> StepOutcome:
    registry = MLFLOW.client(ctx.settings)
    model = registry.get_model(inputs.name)
    document: dict[str, Any] = {
        "collected_at": datetime.now(UTC).isoformat(),
        "system": "mlflow",
        "model": inputs.name,
        "found": model is not None,
        "registered_model": model or {},
    }
    if model is None:
        sha256 = ctx.keep(document, "MLflow registered model (not found)", asset=inputs.asset)
        return ok(f"MLflow has no model {inputs.name} (recorded as evidence)", found=False, evidence_sha256=sha256)
    aliases = {str(a.get("alias")): str(a.get("version")) for a in model.get("aliases") or [] if isinstance(a, dict)}
    latest = [str(v.get("version")) for v in model.get("latest_versions") or [] if isinstance(v, dict)]
    latest = [v for v in latest if re.match(VERSION_PATTERN, v)]
    version = inputs.version or aliases.get(inputs.alias) or max(latest, key=int, default=None)
    record = registry.get_version(inputs.name, version) if version else None
    document.update({"aliases": aliases, "alias": inputs.alias, "suspect_version": version, "version": record})
    artifacts: dict[str, Any] | None = None
    artifacts_note = "no version to digest"
    if record is not None:
        document["version_digest"] = {"sha256": version_digest(record), "over": "canonical JSON, aliases left out"}
        root, artifacts_note = registry.artifact_root(record)
        if root is not None:
            try:
                artifacts = registry.artifact_digests(root)
            except ConnectorError as exc:  # the record is still kept; the output says why the files are not
                artifacts_note = f"artifact files not digested ({exc.status}: {exc.detail[:120]})"
            else:
                more = f", truncated: {'; '.join(artifacts['truncated_reasons'])}" if artifacts["truncated"] else ""
                artifacts_note = f"{artifacts['files_digested']} artifact file(s) digested{more}"
        document["artifacts"] = artifacts
        document["artifacts_note"] = artifacts_note
    sha256 = ctx.keep(document, f"MLflow model {inputs.name} version {version} and its digests", asset=inputs.asset)
    if record is None:
        return ok(
            f"model {inputs.name} preserved; version {version or '(none)'} not found",
            found=True,
            aliases=aliases,
            version=version,
            evidence_sha256=sha256,
        )
    return ok(
        f"model {inputs.name} v{version} preserved (source {str(record.get('source'))[:200]}); {artifacts_note}",
        found=True,
        version=version,
        alias_version=aliases.get(inputs.alias),
        aliases=aliases,
        version_digest=document["version_digest"]["sha256"],
        source=record.get("source"),
        run_id=record.get("run_id"),
        version_status=record.get("status"),  # not "status": the runner gives every step's outcome that name
        user_id=record.get("user_id"),
        artifact_files=artifacts["files_digested"] if artifacts else 0,
        artifacts_note=artifacts_note,
        artifacts_truncated=bool(artifacts and artifacts["truncated"]),
        evidence_sha256=sha256,
    )


def _probe_alias(ctx: ActionContext, name: str, alias: str, expected: str | None) -> ProbeResult:
    current = MLFLOW.client(ctx.settings).get_alias(name, alias)
    shown = f"points to version {current}" if current else "is not set"
    wanted = f"version {expected}" if expected else "not set"
    return ProbeResult(ok=current == expected, detail=f"MLflow reads {name}@{alias}: it {shown} (expected {wanted})")


def _probe_pinned(ctx: ActionContext, inputs: AliasPin, outcome: StepOutcome) -> ProbeResult:
    return _probe_alias(ctx, inputs.name, inputs.alias, inputs.version)


def _probe_unpinned(ctx: ActionContext, inputs: AliasRestore, outcome: StepOutcome) -> ProbeResult:
    if outcome.output.get("left_as_is"):
        expected = outcome.output.get("current_version")
        return _probe_alias(ctx, inputs.name, inputs.alias, str(expected) if expected else None)
    return _probe_alias(ctx, inputs.name, inputs.alias, inputs.previous_version)


@action(
    "mlflow.pin_alias",
    effect=Effect.changing,
    inputs=AliasPin,
    summary="Pin the model's serving alias to a known-good version (records the version it pointed to)",
    inverse="mlflow.unpin_alias",
    probe=_probe_pinned,
)
def pin_alias(ctx: ActionContext, inputs: AliasPin) -> StepOutcome:
    result = MLFLOW.client(ctx.settings).pin(inputs.name, inputs.alias, inputs.version)
    previous = result["previous_version"]
    if not result["changed"]:
        return ok(
            f"{inputs.name}@{inputs.alias} already points to version {inputs.version}",
            already=True,
            previous_version=previous,
            pinned_version=inputs.version,
        )
    was = f"version {previous}" if previous else "nothing (it was not set)"
    return ok(
        f"{inputs.name}@{inputs.alias} pinned to version {inputs.version} (it pointed to {was})",
        already=False,
        previous_version=previous,
        pinned_version=inputs.version,
    )


@action(
    "mlflow.unpin_alias",
    effect=Effect.changing,
    inputs=AliasRestore,
    summary="Put the model's alias back on the version recorded by mlflow.pin_alias, or delete it if it was "
    "not set (the inverse of mlflow.pin_alias)",
    inverse="mlflow.pin_alias",
    probe=_probe_unpinned,
)
def unpin_alias(ctx: ActionContext, inputs: AliasRestore) -> StepOutcome:
    result = MLFLOW.client(ctx.settings).unpin(
        inputs.name, inputs.alias, inputs.previous_version, inputs.pinned_version
    )
    target = f"version {inputs.previous_version}" if inputs.previous_version else "not set"
    if result["left_as_is"]:
        return refused(
            f"{inputs.name}@{inputs.alias} points to version {result['current_version'] or '(none)'}, which the pin "
            f"did not set: left as it is",
            left_as_is=True,
            current_version=result["current_version"],
        )
    if not result["changed"]:
        return ok(
            f"{inputs.name}@{inputs.alias} is already {target}", already=True, restored_version=inputs.previous_version
        )
    return ok(
        f"{inputs.name}@{inputs.alias} restored: {target} (was version {result['current_version']})",
        already=False,
        restored_version=inputs.previous_version,
        replaced_version=result["current_version"],
    )


from tasks import mlflow_signing as mlflow_signing  # noqa: E402 - registers mlflow.verify_model_signature
