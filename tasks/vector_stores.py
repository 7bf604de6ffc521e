"""Actions on vector stores for RAG poisoning and indirect prompt injection: Chroma
collections (export, quarantine by rename, release, restore without the poisoned records)
and LanceDB tables (evidence, tags on versions, restore to a known-good version).

Record contents (documents, metadata) are attacker-controlled text: they are kept as
evidence data and never rendered; only counts, ids and hashes reach summaries and outputs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from aisoar.actions import Effect
from connectors.chroma import (
    COLLECTION_NAME,
    RECORD_ID,
    ChromaStore,
    Collection,
    content_sha256,
    quarantine_name,
    vector_drift,
)
from connectors.errors import ConnectorError
from connectors.lancedb_store import TABLE_NAME, TAG_NAME
from tasks import connect
from tasks.base import ActionContext, AssetInputs, ProbeResult, StepOutcome, ok
from tasks.registry import action

MAX_POISONED_IDS = 1000
# Chroma prints float32 vectors with ~8 digits and, in cosine space, a copied vector can come
# back one float32 step (relative 6e-8) off: compare vectors within this relative tolerance.
VECTOR_TOLERANCE = 1e-6


def _split_ids(value: Any) -> Any:
    """A template renders to a string: accept ``"a, b,c"`` as well as a list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CollectionName = Annotated[
    str, Field(pattern=COLLECTION_NAME.pattern, description="the collection's name (Chroma's name rules)")
]
RecordId = Annotated[str, Field(max_length=256, pattern=RECORD_ID.pattern)]
RecordIds = Annotated[
    list[RecordId],
    BeforeValidator(_split_ids),
    Field(min_length=1, max_length=MAX_POISONED_IDS, description="record ids: a list or a comma-separated string"),
]


class ChromaCollection(AssetInputs):
    name: CollectionName

    @property
    def asset(self) -> str:
        return f"chroma:collection:{self.name}"


class ChromaRestore(ChromaCollection):
    poisoned_ids: RecordIds


# -- Chroma ---------------------------------------------------------------------------
@action(
    "chroma.export_collection",
    effect=Effect.read_only,
    inputs=ChromaCollection,
    summary="Export every record of the Chroma collection (documents, metadata, embeddings) with its sha256 "
    "as evidence",
    collects_evidence=True,
)
def export_collection(ctx: ActionContext, inputs: ChromaCollection) -> StepOutcome:
    store = connect.chroma(ctx.settings)
    collection = store.get_collection(inputs.name)
    qname = quarantine_name(inputs.name, ctx.incident_id)
    if collection is None:  # a re-run after the quarantine: export what is quarantined
        collection = store.get_collection(qname)
    collected_at = datetime.now(UTC).isoformat()
    if collection is None:
        document = {"collected_at": collected_at, "system": "chroma", "collection": inputs.name, "found": False}
        sha = ctx.keep(document, "Chroma collection export (not found)", asset=inputs.asset)
        return ok(f"Chroma has no collection {inputs.name} (recorded as evidence)", found=False, evidence_sha256=sha)
    records, export_sha256, pages = store.export(collection)
    manifest = {
        "collection_id": collection.id,
        "collection_name": collection.name,
        "collection_metadata": collection.metadata,
        "count": len(records),
        "sha256": export_sha256,
        "page_size": store.page_size,
        "pages": pages,
        "canonical_form": "JSON records sorted by id, sorted keys, floats at float32 precision (9 digits)",
    }
    document = {
        "collected_at": collected_at,
        "system": "chroma",
        "tenant": ctx.settings.chroma_tenant,
        "database": ctx.settings.chroma_database,
        "manifest": manifest,
        "records": records,  # hostile text: data only
    }
    evidence_sha256 = ctx.keep(document, f"Chroma collection export of {collection.name}", asset=inputs.asset)
    return ok(
        f"exported {len(records)} record(s) of Chroma collection {collection.name} in {pages} page(s), "
        f"sha256 {export_sha256[:12]}",
        found=True,
        evidence_sha256=evidence_sha256,
        **manifest,
    )


def _probe_quarantined(ctx: ActionContext, inputs: ChromaCollection, outcome: StepOutcome) -> ProbeResult:
    store = connect.chroma(ctx.settings)
    qname = str(outcome.output.get("quarantine_name") or quarantine_name(inputs.name, ctx.incident_id))
    by_name = store.get_collection(inputs.name)
    held = store.get_collection(qname)
    if by_name is not None:
        return ProbeResult(ok=False, detail=f"Chroma still resolves the name {inputs.name}")
    if held is None:
        return ProbeResult(ok=False, detail=f"Chroma resolves neither {inputs.name} nor {qname}")
    return ProbeResult(ok=True, detail=f"{inputs.name} no longer resolves; the collection is held as {qname}")


def _probe_released(ctx: ActionContext, inputs: ChromaCollection, outcome: StepOutcome) -> ProbeResult:
    store = connect.chroma(ctx.settings)
    qname = quarantine_name(inputs.name, ctx.incident_id)
    if store.get_collection(inputs.name) is None:
        return ProbeResult(ok=False, detail=f"Chroma does not resolve {inputs.name}")
    if store.get_collection(qname) is not None:
        return ProbeResult(ok=False, detail=f"{qname} still exists")
    return ProbeResult(ok=True, detail=f"{inputs.name} resolves again and {qname} is gone")


@action(
    "chroma.quarantine_collection",
    effect=Effect.changing,
    inputs=ChromaCollection,
    summary="Rename the Chroma collection to <name>__quarantined__<incident> so the RAG app can no longer read it",
    inverse="chroma.release_collection",
    probe=_probe_quarantined,
)
def quarantine_collection(ctx: ActionContext, inputs: ChromaCollection) -> StepOutcome:
    result = connect.chroma(ctx.settings).quarantine(inputs.name, ctx.incident_id)
    if result["already"]:
        return ok(f"Chroma collection {inputs.name} was already quarantined as {result['quarantine_name']}", **result)
    return ok(f"Chroma collection {inputs.name} quarantined as {result['quarantine_name']}", **result)


@action(
    "chroma.release_collection",
    effect=Effect.changing,
    inputs=ChromaCollection,
    summary="Rename the quarantined Chroma collection back to its name (the inverse of chroma.quarantine_collection)",
    inverse="chroma.quarantine_collection",
    probe=_probe_released,
)
def release_collection(ctx: ActionContext, inputs: ChromaCollection) -> StepOutcome:
    result = connect.chroma(ctx.settings).release(inputs.name, ctx.incident_id)
    if result["already"]:
        return ok(f"Chroma collection {inputs.name} was not quarantined (already released)", **result)
    return ok(f"Chroma collection {inputs.name} released from {result['quarantine_name']}", **result)


def _probe_restored(ctx: ActionContext, inputs: ChromaRestore, outcome: StepOutcome) -> ProbeResult:
    store = connect.chroma(ctx.settings)
    restored = store.get_collection(inputs.name)
    if restored is None:
        return ProbeResult(ok=False, detail=f"Chroma does not resolve {inputs.name}")
    expected = outcome.output.get("expected_count")
    if expected is None:  # no recorded expectation: derive it from the quarantined original
        held = store.require(quarantine_name(inputs.name, ctx.incident_id), "verify restore")
        original = store.count(held)
        expected = original - len(store.present_ids(held, inputs.poisoned_ids))
    count = store.count(restored)
    leftover = store.present_ids(restored, inputs.poisoned_ids)
    problems = []
    if count != expected:
        problems.append(f"{count} record(s) instead of {expected}")
    if leftover:
        problems.append(f"{len(leftover)} poisoned record(s) still present: {', '.join(leftover[:10])}")
    if not problems:  # same records as the quarantined original minus the poisoned ones
        problems.extend(_compare_with_original(store, inputs, ctx.incident_id, restored, outcome))
    if problems:
        return ProbeResult(ok=False, detail=f"restored {inputs.name}: " + "; ".join(problems))
    return ProbeResult(
        ok=True,
        detail=f"{inputs.name} holds {count} record(s), none of the {len(inputs.poisoned_ids)} poisoned id(s); "
        "ids, documents and metadata hash as the quarantined original minus them, vectors equal within "
        f"{VECTOR_TOLERANCE:g}",
    )


def _compare_with_original(
    store: ChromaStore, inputs: ChromaRestore, incident_id: str, restored: Collection, outcome: StepOutcome
) -> list[str]:
    held = store.get_collection(quarantine_name(inputs.name, incident_id))
    if held is None:
        return ["the quarantined original is gone: cannot compare the content"]
    poisoned = set(inputs.poisoned_ids)
    original, _, _ = store.export(held)
    expected = [r for r in original if r["id"] not in poisoned]
    actual, _, _ = store.export(restored)
    problems = []
    wanted = outcome.output.get("expected_content_sha256") or content_sha256(expected)
    if content_sha256(actual) != wanted or content_sha256(expected) != wanted:
        problems.append("ids, documents or metadata differ from the quarantined original minus the poisoned records")
    drift = vector_drift(expected, actual)
    if drift > VECTOR_TOLERANCE:
        problems.append(f"vectors differ from the quarantined original (largest relative difference {drift:.2e})")
    return problems


@action(
    "chroma.restore_collection_without",
    effect=Effect.changing,
    inputs=ChromaRestore,
    summary="Recreate the Chroma collection under its name from the quarantined one minus the poisoned records "
    "(the quarantined original is kept)",
    inverse="chroma.quarantine_collection",
    probe=_probe_restored,
)
def restore_collection_without(ctx: ActionContext, inputs: ChromaRestore) -> StepOutcome:
    result = connect.chroma(ctx.settings).restore_without(inputs.name, ctx.incident_id, inputs.poisoned_ids)
    removed = len(result["removed_ids"])
    missing = result["not_found_ids"]
    note = f"; {len(missing)} given id(s) were not in the collection" if missing else ""
    return ok(
        f"Chroma collection {inputs.name} restored from {result['quarantine_name']}: {result['expected_count']} of "
        f"{result['original_count']} record(s), {removed} poisoned record(s) left out{note}",
        **result,
    )


# -- LanceDB --------------------------------------------------------------------------
TableName = Annotated[str, Field(pattern=TABLE_NAME.pattern, description="the table's name")]
TagName = Annotated[str, Field(pattern=TAG_NAME.pattern, description="a tag on one of the table's versions")]


class LanceTable(AssetInputs):
    table: TableName

    @property
    def asset(self) -> str:
        return f"lancedb:table:{self.table}"


class LanceTag(LanceTable):
    tag: TagName
    version: Annotated[int | None, Field(None, ge=1, description="default: the current version")]


class LanceRestore(LanceTable):
    tag: TagName | None = None
    version: Annotated[int | None, Field(None, ge=1)]

    @model_validator(mode="after")
    def _one_target(self) -> LanceRestore:
        if (self.tag is None) == (self.version is None):
            raise ValueError("give exactly one of tag (a known-good tag) or version")
        return self

    @property
    def ref(self) -> int | str:
        return self.version if self.version is not None else str(self.tag)


@action(
    "lancedb.collect_table_evidence",
    effect=Effect.read_only,
    inputs=LanceTable,
    summary="Preserve the LanceDB table (current version, rows, schema, sha256, tags) as evidence",
    collects_evidence=True,
)
def collect_table_evidence(ctx: ActionContext, inputs: LanceTable) -> StepOutcome:
    store = connect.lancedb(ctx.settings)
    rows, state = store.export(inputs.table)
    tags = store.tags(inputs.table)
    manifest = {
        "table": inputs.table,
        "version": state.version,
        "row_count": state.row_count,
        "sha256": state.sha256,
        "schema": state.schema,
        "tags": tags,
    }
    document = {"collected_at": datetime.now(UTC).isoformat(), "system": "lancedb", "manifest": manifest, "rows": rows}
    evidence_sha256 = ctx.keep(document, f"LanceDB table export of {inputs.table}", asset=inputs.asset)
    return ok(
        f"LanceDB table {inputs.table} preserved: version {state.version}, {state.row_count} row(s), "
        f"{len(tags)} tag(s), sha256 {state.sha256[:12]}",
        evidence_sha256=evidence_sha256,
        **manifest,
    )


def _probe_tag(present: bool) -> Any:
    def probe(ctx: ActionContext, inputs: LanceTag, outcome: StepOutcome) -> ProbeResult:
        tags = connect.lancedb(ctx.settings).tags(inputs.table)
        if not present:
            if inputs.tag in tags:
                return ProbeResult(ok=False, detail=f"tag {inputs.tag} still names version {tags[inputs.tag]}")
            return ProbeResult(ok=True, detail=f"table {inputs.table} has no tag {inputs.tag}")
        expected = outcome.output.get("version", inputs.version)
        if tags.get(inputs.tag) is None:
            return ProbeResult(ok=False, detail=f"table {inputs.table} has no tag {inputs.tag}")
        good = expected is None or tags[inputs.tag] == expected
        return ProbeResult(ok=good, detail=f"tag {inputs.tag} names version {tags[inputs.tag]}")

    return probe


@action(
    "lancedb.tag_version",
    effect=Effect.changing,
    inputs=LanceTag,
    summary="Tag a version of the LanceDB table (default: the current one), e.g. as known-good or as the "
    "poisoned state",
    inverse="lancedb.untag",
    probe=_probe_tag(True),
)
def tag_version(ctx: ActionContext, inputs: LanceTag) -> StepOutcome:
    result = connect.lancedb(ctx.settings).tag_version(inputs.table, inputs.tag, inputs.version)
    word = "already named" if result["already"] else "now names"
    return ok(f"tag {inputs.tag} {word} version {result['version']} of LanceDB table {inputs.table}", **result)


@action(
    "lancedb.untag",
    effect=Effect.changing,
    inputs=LanceTag,
    summary="Delete a tag of the LanceDB table (the version stays; the inverse of lancedb.tag_version)",
    inverse="lancedb.tag_version",
    probe=_probe_tag(False),
)
def untag(ctx: ActionContext, inputs: LanceTag) -> StepOutcome:
    result = connect.lancedb(ctx.settings).untag(inputs.table, inputs.tag)
    if result["already"]:
        return ok(f"LanceDB table {inputs.table} had no tag {inputs.tag}", **result)
    return ok(f"tag {inputs.tag} (version {result['version']}) deleted from LanceDB table {inputs.table}", **result)


def _probe_restored_version(ctx: ActionContext, inputs: LanceRestore, outcome: StepOutcome) -> ProbeResult:
    store = connect.lancedb(ctx.settings)
    target = outcome.output.get("restored_version")
    try:
        _, wanted = store.export(inputs.table, target if isinstance(target, int) else inputs.ref)
        _, current = store.export(inputs.table)
    except ConnectorError as exc:
        return ProbeResult(ok=False, detail=str(exc))
    same = (current.row_count, current.ids, current.sha256) == (wanted.row_count, wanted.ids, wanted.sha256)
    if not same:
        return ProbeResult(
            ok=False,
            detail=f"current version {current.version} ({current.row_count} rows, sha256 {current.sha256[:12]}) "
            f"differs from version {wanted.version} ({wanted.row_count} rows, sha256 {wanted.sha256[:12]})",
        )
    return ProbeResult(
        ok=True,
        detail=f"current version {current.version} equals version {wanted.version}: {current.row_count} rows, "
        f"same ids, sha256 {current.sha256[:12]}",
    )


@action(
    "lancedb.restore_version",
    effect=Effect.changing,
    inputs=LanceRestore,
    summary="Restore the LanceDB table to a known-good tag or version (a new version; the versions in between "
    "stay readable); its inverse is this action with version = the recorded previous_version",
    inverse="lancedb.restore_version",
    probe=_probe_restored_version,
)
def restore_version(ctx: ActionContext, inputs: LanceRestore) -> StepOutcome:
    result = connect.lancedb(ctx.settings).restore_version(inputs.table, inputs.ref)
    if result["already"]:
        return ok(
            f"LanceDB table {inputs.table} already holds the content of {inputs.ref} "
            f"(version {result['restored_version']})",
            **result,
        )
    return ok(
        f"LanceDB table {inputs.table} restored to {inputs.ref} (version {result['restored_version']}) as version "
        f"{result['new_version']}; the version before was {result['previous_version']}",
        **result,
    )
