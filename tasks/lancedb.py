"""Actions on LanceDB tables: evidence, tags on versions, restore to a known-good version.

Record contents (documents, metadata) are attacker-controlled text: they are kept as
evidence data and never rendered; only counts, ids and hashes reach summaries and outputs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field, model_validator

from aisoar.actions import Effect
from connectors.errors import ConnectorError
from connectors.lancedb import SYSTEM as LANCEDB
from connectors.lancedb import TABLE_NAME, TAG_NAME
from tasks.base import ActionContext, AssetInputs, ProbeResult, StepOutcome, ok
from tasks.registry import action

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
    store = LANCEDB.client(ctx.settings)
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
        tags = LANCEDB.client(ctx.settings).tags(inputs.table)
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
    result = LANCEDB.client(ctx.settings).tag_version(inputs.table, inputs.tag, inputs.version)
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
    result = LANCEDB.client(ctx.settings).untag(inputs.table, inputs.tag)
    if result["already"]:
        return ok(f"LanceDB table {inputs.table} had no tag {inputs.tag}", **result)
    return ok(f"tag {inputs.tag} (version {result['version']}) deleted from LanceDB table {inputs.table}", **result)


def _probe_restored_version(ctx: ActionContext, inputs: LanceRestore, outcome: StepOutcome) -> ProbeResult:
    store = LANCEDB.client(ctx.settings)
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
    result = LANCEDB.client(ctx.settings).restore_version(inputs.table, inputs.ref)
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
