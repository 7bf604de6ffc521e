"""Actions on Chroma collections: export, quarantine by rename, release, restore without the
poisoned records.

Record contents (documents, metadata) are attacker-controlled text: they are kept as
evidence data and never rendered; only counts, ids and hashes reach summaries and outputs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

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
from connectors.chroma import SYSTEM as CHROMA
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


@action(
    "chroma.export_collection",
    effect=Effect.read_only,
    inputs=ChromaCollection,
    summary="Export every record of the Chroma collection (documents, metadata, embeddings) with its sha256 "
    "as evidence",
    collects_evidence=True,
)
def export_collection(ctx: ActionContext, inputs: ChromaCollection) -> StepOutcome:
    store = CHROMA.client(ctx.settings)
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
        "tenant": CHROMA.settings_of(ctx.settings).tenant,
        "database": CHROMA.settings_of(ctx.settings).database,
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
    store = CHROMA.client(ctx.settings)
    qname = str(outcome.output.get("quarantine_name") or quarantine_name(inputs.name, ctx.incident_id))
    by_name = store.get_collection(inputs.name)
    held = store.get_collection(qname)
    if by_name is not None:
        return ProbeResult(ok=False, detail=f"Chroma still resolves the name {inputs.name}")
    if held is None:
        return ProbeResult(ok=False, detail=f"Chroma resolves neither {inputs.name} nor {qname}")
    return ProbeResult(ok=True, detail=f"{inputs.name} no longer resolves; the collection is held as {qname}")


def _probe_released(ctx: ActionContext, inputs: ChromaCollection, outcome: StepOutcome) -> ProbeResult:
    store = CHROMA.client(ctx.settings)
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
    result = CHROMA.client(ctx.settings).quarantine(inputs.name, ctx.incident_id)
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
    result = CHROMA.client(ctx.settings).release(inputs.name, ctx.incident_id)
    if result["already"]:
        return ok(f"Chroma collection {inputs.name} was not quarantined (already released)", **result)
    return ok(f"Chroma collection {inputs.name} released from {result['quarantine_name']}", **result)


def _probe_restored(ctx: ActionContext, inputs: ChromaRestore, outcome: StepOutcome) -> ProbeResult:
    store = CHROMA.client(ctx.settings)
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
    result = CHROMA.client(ctx.settings).restore_without(inputs.name, ctx.incident_id, inputs.poisoned_ids)
    removed = len(result["removed_ids"])
    missing = result["not_found_ids"]
    note = f"; {len(missing)} given id(s) were not in the collection" if missing else ""
    return ok(
        f"Chroma collection {inputs.name} restored from {result['quarantine_name']}: {result['expected_count']} of "
        f"{result['original_count']} record(s), {removed} poisoned record(s) left out{note}",
        **result,
    )
