"""Actions on a Qdrant vector store behind a RAG application (CoSAI: data poisoning, indirect
prompt injection): snapshot the collection first, stop serving it by re-pointing the alias
the application reads, then (with approval) recover a snapshot or delete poisoned points."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from aisoar.actions import Effect
from connectors.errors import ConnectorError, Planned
from connectors.qdrant import NAME_PATTERN, SNAPSHOT_PATTERN, TITLE, UUID_PATTERN
from connectors.qdrant import SYSTEM as QDRANT
from tasks.base import ActionContext, AssetInputs, ProbeResult, StepOutcome, ok, planned, refused
from tasks.registry import action

Name = Annotated[
    str, Field(pattern=NAME_PATTERN, description="a Qdrant collection or alias name (letters, digits, _ . -)")
]
SnapshotName = Annotated[str, Field(pattern=SNAPSHOT_PATTERN, description="a snapshot file name (<name>.snapshot)")]
PointId = Annotated[int, Field(ge=0, le=2**64 - 1)] | Annotated[str, Field(pattern=UUID_PATTERN)]
KEEP_PAYLOADS = 10_000  # ids and payloads of at most this many points go into the evidence


def collection_asset(name: str) -> str:
    return f"qdrant:collection:{name}"


class QdrantCollection(AssetInputs):
    collection: Name

    @property
    def asset(self) -> str:
        return collection_asset(self.collection)


class AliasSwitch(AssetInputs):
    """The alias a RAG application reads, the collection it normally serves (the suspect one),
    and where quarantine points it instead (none: the alias is deleted, so the application's
    reads fail closed)."""

    alias: Name
    collection: Name
    fallback_collection: Name | None = None

    @field_validator("fallback_collection", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _distinct(self) -> AliasSwitch:
        if self.fallback_collection == self.collection:
            raise ValueError("fallback_collection must differ from the quarantined collection")
        if self.alias in {self.collection, self.fallback_collection}:
            raise ValueError("alias must differ from the collections' names")
        return self

    @property
    def asset(self) -> str:
        return collection_asset(self.collection)


class SnapshotRecovery(AssetInputs):
    collection: Name
    snapshot: SnapshotName
    source_collection: Name | None = Field(
        None, description="the collection the snapshot was taken of (default: collection)"
    )

    @field_validator("source_collection", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def asset(self) -> str:
        return collection_asset(self.collection)


class PointsDeletion(AssetInputs):
    collection: Name
    ids: Annotated[list[PointId], Field(min_length=1, max_length=1000)]

    @property
    def asset(self) -> str:
        return collection_asset(self.collection)


# -- evidence: the snapshot manifest --------------------------------------------------------
@action(
    "qdrant.snapshot_collection",
    effect=Effect.read_only,
    inputs=QdrantCollection,
    summary="Snapshot the collection in Qdrant (a file on the server; no data changes) and keep its manifest "
    "(points, export digest, snapshot name and sha256, aliases) and the points' payloads as evidence",
    collects_evidence=True,
)
def snapshot_collection(ctx: ActionContext, inputs: QdrantCollection) -> StepOutcome:
    api = QDRANT.client(ctx.settings)
    info = api.collection_info(inputs.collection)
    if info is None:
        document = {"collected_at": _now(), "system": "qdrant", "requested": inputs.collection, "found": False}
        sha256 = ctx.keep(document, "Qdrant collection state (not found)", asset=inputs.asset)
        return ok(
            f"Qdrant has no collection or alias {inputs.collection} (recorded as evidence)",
            found=False,
            evidence_sha256=sha256,
        )
    aliases = api.aliases()
    collection = aliases.get(inputs.collection, inputs.collection)
    export = api.export(collection, keep_payloads=KEEP_PAYLOADS)
    plan_note = None
    try:
        snapshot: dict[str, Any] | None = api.create_snapshot(collection)
    except Planned as exc:  # plan mode: keep what is there now, make no file
        snapshot, plan_note = None, str(exc)
    after = api.collection_info(collection) or {}
    manifest = {
        "collected_at": _now(),
        "system": "qdrant",
        "requested": inputs.collection,
        "collection": collection,
        "via_alias": inputs.collection if collection != inputs.collection else None,
        "aliases": sorted(a for a, c in aliases.items() if c == collection),
        "status": info.get("status"),
        "points_count": info.get("points_count"),
        "points_count_after_snapshot": after.get("points_count"),
        "vectors": (info.get("config") or {}).get("params", {}).get("vectors"),
        "export": {
            "points": export["points"],
            "sha256": export["sha256"],
            "of": "id, payload and vector of every point, in Qdrant's scroll order (by id)",
        },
        "snapshot": {k: snapshot.get(k) for k in ("name", "creation_time", "size", "checksum")} if snapshot else None,
        "plan": plan_note,
    }
    sha256 = _keep_about(ctx, manifest, "Qdrant collection snapshot manifest", inputs.collection, collection)
    payloads = {
        "collected_at": manifest["collected_at"],
        "system": "qdrant",
        "collection": collection,
        "points": export["points"],
        "kept": len(export["payloads"]),
        "truncated": export["payloads_truncated"],
        "payloads": export["payloads"],  # hostile text (maybe the poison itself): data only
    }
    payloads_sha256 = _keep_about(ctx, payloads, "Qdrant collection payloads", inputs.collection, collection)
    moving = len({info.get("points_count"), after.get("points_count"), export["points"]}) > 1
    note = "; the collection changed while it was read (writes still going on?)" if moving else ""
    fields: dict[str, Any] = dict(
        found=True,
        collection=collection,
        alias=manifest["via_alias"],
        aliases=manifest["aliases"],
        points_count=export["points"],
        export_sha256=export["sha256"],
        snapshot=snapshot.get("name") if snapshot else None,
        checksum=snapshot.get("checksum") if snapshot else None,
        evidence_sha256=sha256,
        payloads_sha256=payloads_sha256,
    )
    if snapshot is None:
        return planned(
            f"{plan_note}; the collection's state ({export['points']} points) was kept as evidence{note}", **fields
        )
    return ok(
        f"snapshot {snapshot.get('name')} of {collection} ({export['points']} points) taken, manifest kept{note}",
        **fields,
    )


def _keep_about(ctx: ActionContext, document: dict[str, Any], what: str, requested: str, collection: str) -> str:
    """Keep ``document`` about the name asked for and, when that was an alias, about its collection too."""
    sha256 = ctx.keep(document, what, asset=collection_asset(requested))
    if collection != requested:
        ctx.keep(document, what, asset=collection_asset(collection))
    return sha256


# -- containment: the alias the RAG application reads ----------------------------------------
def _probe_alias(ctx: ActionContext, inputs: AliasSwitch, expected: str | None) -> ProbeResult:
    current = QDRANT.client(ctx.settings).aliases().get(inputs.alias)
    shown = f"serves {current}" if current else "does not exist"
    return ProbeResult(ok=current == expected, detail=f"Qdrant lists alias {inputs.alias}: it {shown}")


def _probe_quarantined(ctx: ActionContext, inputs: AliasSwitch, outcome: StepOutcome) -> ProbeResult:
    if outcome.output.get("already") and outcome.output.get("previous_collection") is None:
        return _probe_alias(ctx, inputs, None)  # the alias did not exist: it still must not
    return _probe_alias(ctx, inputs, inputs.fallback_collection)


def _probe_restored(ctx: ActionContext, inputs: AliasSwitch, outcome: StepOutcome) -> ProbeResult:
    return _probe_alias(ctx, inputs, inputs.collection)


@action(
    "qdrant.quarantine_alias",
    effect=Effect.changing,
    inputs=AliasSwitch,
    summary="Stop serving the collection through the alias the RAG app reads: atomically re-point the alias "
    "to the fallback collection, or delete it (records the previous target)",
    inverse="qdrant.restore_alias",
    probe=_probe_quarantined,
)
def quarantine_alias(ctx: ActionContext, inputs: AliasSwitch) -> StepOutcome:
    api = QDRANT.client(ctx.settings)
    current = api.aliases().get(inputs.alias)
    target = inputs.fallback_collection
    if current == target:
        where = f"serves {target}" if target else "does not exist"
        return ok(
            f"alias {inputs.alias} already {where}: {inputs.collection} is not served through it",
            already=True,
            previous_collection=current,
            new_collection=target,
        )
    if current is None:
        return ok(
            f"alias {inputs.alias} does not exist: {inputs.collection} is not served through it",
            already=True,
            previous_collection=None,
            new_collection=None,
        )
    if current != inputs.collection:
        return refused(
            f"alias {inputs.alias} serves {current}, not {inputs.collection}: left as it is",
            previous_collection=current,
        )
    actions: list[dict[str, Any]] = [{"delete_alias": {"alias_name": inputs.alias}}]
    if target:
        actions.append({"create_alias": {"collection_name": target, "alias_name": inputs.alias}})
    api.change_aliases(actions, "quarantine alias", inputs.alias)
    done = f"re-pointed to {target}" if target else "deleted (reads through it now fail)"
    return ok(
        f"alias {inputs.alias} no longer serves {inputs.collection}: {done}",
        already=False,
        previous_collection=current,
        new_collection=target,
    )


@action(
    "qdrant.restore_alias",
    effect=Effect.changing,
    inputs=AliasSwitch,
    summary="Point the alias back to the collection (the inverse of qdrant.quarantine_alias)",
    inverse="qdrant.quarantine_alias",
    probe=_probe_restored,
)
def restore_alias(ctx: ActionContext, inputs: AliasSwitch) -> StepOutcome:
    api = QDRANT.client(ctx.settings)
    current = api.aliases().get(inputs.alias)
    if current == inputs.collection:
        return ok(
            f"alias {inputs.alias} already serves {inputs.collection}",
            already=True,
            previous_collection=current,
            new_collection=current,
        )
    if current not in {inputs.fallback_collection, None}:
        return refused(
            f"alias {inputs.alias} now serves {current}, which quarantine did not set: left as it is",
            previous_collection=current,
        )
    actions: list[dict[str, Any]] = [{"delete_alias": {"alias_name": inputs.alias}}] if current else []
    actions.append({"create_alias": {"collection_name": inputs.collection, "alias_name": inputs.alias}})
    api.change_aliases(actions, "restore alias", inputs.alias)
    return ok(
        f"alias {inputs.alias} serves {inputs.collection} again",
        already=False,
        previous_collection=current,
        new_collection=inputs.collection,
    )


# -- eradication / recovery (destructive) -----------------------------------------------------
def _probe_recovered(ctx: ActionContext, inputs: SnapshotRecovery, outcome: StepOutcome) -> ProbeResult:
    target = str(outcome.output.get("collection") or inputs.collection)
    now = QDRANT.client(ctx.settings).export(target)
    expected_sha = outcome.output.get("expected_export_sha256")
    if not expected_sha:
        return ProbeResult(
            ok=False,
            detail=f"collection {target} holds {now['points']} points, but this incident "
            f"kept no manifest of snapshot {inputs.snapshot} to compare them with",
        )
    same = now["sha256"] == expected_sha and now["points"] == outcome.output.get("expected_points")
    word = "equal" if same else "NOT equal"
    return ProbeResult(
        ok=same,
        detail=f"collection {target}: {now['points']} points, export digest {word} to "
        f"the manifest of snapshot {inputs.snapshot} ({outcome.output.get('expected_points')} points)",
    )


@action(
    "qdrant.recover_snapshot",
    effect=Effect.destructive,
    inputs=SnapshotRecovery,
    summary="Overwrite the collection's points with a snapshot kept on the Qdrant server (checksum verified by "
    "Qdrant); the current points are lost unless snapshotted first",
    probe=_probe_recovered,
)
def recover_snapshot(ctx: ActionContext, inputs: SnapshotRecovery) -> StepOutcome:
    api = QDRANT.client(ctx.settings)
    aliases = api.aliases()
    target = aliases.get(inputs.collection, inputs.collection)
    source = aliases.get(inputs.source_collection or inputs.collection, inputs.source_collection or inputs.collection)
    listed = {str(s.get("name")): s for s in api.list_snapshots(source)}
    if inputs.snapshot not in listed:
        raise ConnectorError(
            TITLE,
            "recover snapshot",
            f"collection {target}",
            404,
            f"collection {source} has no snapshot {inputs.snapshot}",
        )
    checksum = listed[inputs.snapshot].get("checksum")
    manifest = _manifest(ctx, inputs.snapshot, {inputs.collection, target, source, inputs.source_collection or ""})
    expected = {
        "expected_points": manifest["export"]["points"] if manifest else None,
        "expected_export_sha256": manifest["export"]["sha256"] if manifest else None,
        "manifest_found": manifest is not None,
    }
    if manifest is not None:
        now = api.export(target)
        if now["sha256"] == manifest["export"]["sha256"]:
            return ok(
                f"collection {target} already holds snapshot {inputs.snapshot}'s points",
                already=True,
                collection=target,
                snapshot=inputs.snapshot,
                checksum=checksum,
                **expected,
            )
    before = (api.collection_info(target) or {}).get("points_count")
    api.recover_snapshot(target, inputs.snapshot, source, str(checksum) if checksum else None)
    return ok(
        f"collection {target} recovered from snapshot {inputs.snapshot} ({before} points before)",
        already=False,
        collection=target,
        snapshot=inputs.snapshot,
        checksum=checksum,
        points_before=before,
        **expected,
    )


def _manifest(ctx: ActionContext, snapshot: str, collections: set[str]) -> dict[str, Any] | None:
    """The manifest this incident kept when ``snapshot`` was taken, if it did."""
    found = None
    for name in sorted(c for c in collections if c):
        for record in ctx.store.evidence_for(ctx.incident_id, asset=collection_asset(name)):
            try:
                document = json.loads(Path(record.location).read_bytes())
            except (OSError, ValueError):
                continue
            snap = document.get("snapshot") if isinstance(document, dict) else None
            if isinstance(snap, dict) and snap.get("name") == snapshot and isinstance(document.get("export"), dict):
                found = document
    return found


def _probe_points_gone(ctx: ActionContext, inputs: PointsDeletion, outcome: StepOutcome) -> ProbeResult:
    left = QDRANT.client(ctx.settings).retrieve(inputs.collection, list(inputs.ids))
    if left:
        return ProbeResult(ok=False, detail=f"{len(left)} of the point(s) are still in {inputs.collection}")
    return ProbeResult(ok=True, detail=f"none of the {len(inputs.ids)} point(s) is in {inputs.collection} any more")


@action(
    "qdrant.delete_points",
    effect=Effect.destructive,
    inputs=PointsDeletion,
    summary="Delete the given points (poisoned documents) from the collection; the points are kept as evidence first",
    probe=_probe_points_gone,
)
def delete_points(ctx: ActionContext, inputs: PointsDeletion) -> StepOutcome:
    api = QDRANT.client(ctx.settings)
    existing = api.retrieve(inputs.collection, list(inputs.ids))
    if not existing:
        return ok(
            f"none of the {len(inputs.ids)} point(s) is in {inputs.collection}: nothing to delete",
            already=True,
            deleted=0,
        )
    document = {
        "collected_at": _now(),
        "system": "qdrant",
        "collection": inputs.collection,
        "points": existing,
    }  # hostile payloads: data only
    sha256 = ctx.keep(document, "Qdrant points before deletion", asset=inputs.asset)
    api.delete_points(inputs.collection, list(inputs.ids))
    return ok(
        f"{len(existing)} point(s) deleted from {inputs.collection} (kept as evidence first)",
        already=False,
        deleted=len(existing),
        evidence_sha256=sha256,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat()
