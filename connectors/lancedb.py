"""LanceDB (embedded, OSS): evidence about a table, tags on its versions, and restoring a
table to a known-good version.

LanceDB keeps every version of a table; a tag names one. There is no table rename in OSS,
so "quarantine" for LanceDB means restoring the table to a known-good tag: ``restore``
writes a new version whose content equals the old one, and the versions in between stay
readable (nothing is deleted). ``lancedb`` is imported lazily: aisoar works without it.

There is no HTTP layer for a local directory: no retries, Retry-After or timeouts apply.
Every library error becomes a ``ConnectorError`` naming system, operation and table.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from connectors.chroma import canonical_records
from connectors.errors import ConnectorError, PlanGuard
from connectors.system import StandIn, System, SystemSettings

TITLE = "LanceDB"


class LanceDBSettings(SystemSettings):
    uri: str | None = Field(None, description="LanceDB database directory or URI")
TABLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TAG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class TableState:
    """What a version of a table holds, reduced to what a probe compares."""

    version: int
    row_count: int
    sha256: str
    ids: list[str]
    schema: str


def _check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"not a valid LanceDB {what}: {value[:80]!r}")
    return value


class LanceDBStore:
    def __init__(self, uri: str, plan: bool = False, id_column: str = "id") -> None:
        self.uri = uri
        self.plan = plan
        self._guard = PlanGuard(TITLE, plan)
        self.id_column = _check(COLUMN_NAME, id_column, "column name")
        self._db: Any = None

    def _connect(self, operation: str, asset: str) -> Any:
        if self._db is None:
            try:
                import lancedb
            except ImportError as exc:
                raise ConnectorError(TITLE, operation, asset, "not installed", "pip install lancedb") from exc
            try:
                self._db = lancedb.connect(self.uri)
            except Exception as exc:  # any library error becomes a ConnectorError
                raise ConnectorError(TITLE, operation, asset, "error", _short(exc)) from exc
        return self._db

    def _open(self, table: str, operation: str) -> Any:
        _check(TABLE_NAME, table, "table name")
        asset = _asset(table)
        db = self._connect(operation, asset)
        try:
            return db.open_table(table)
        except ValueError as exc:
            raise ConnectorError(TITLE, operation, asset, "not found", f"table {table} does not exist") from exc
        except Exception as exc:
            raise ConnectorError(TITLE, operation, asset, "error", _short(exc)) from exc

    # -- reads --------------------------------------------------------------------------
    def check(self) -> str:
        """One cheap read: list the tables of the database."""
        db = self._connect("list tables", f"database {self.uri}")
        try:
            names = list(db.list_tables().tables)
        except Exception as exc:
            raise ConnectorError(TITLE, "list tables", f"database {self.uri}", "error", _short(exc)) from exc
        return f"LanceDB database readable ({len(names)} table(s))"

    def current_version(self, table: str) -> int:
        return int(self._open(table, "read version").version)

    def tags(self, table: str) -> dict[str, int]:
        handle = self._open(table, "list tags")
        try:
            listed = handle.tags.list()
        except Exception as exc:
            raise ConnectorError(TITLE, "list tags", _asset(table), "error", _short(exc)) from exc
        return {str(name): int(info["version"]) for name, info in sorted(listed.items())}

    def resolve(self, table: str, ref: int | str, operation: str) -> int:
        """The version number a tag or version names (an unknown one is a clear error)."""
        if isinstance(ref, int):
            return ref
        _check(TAG_NAME, ref, "tag")
        tags = self.tags(table)
        if ref not in tags:
            raise ConnectorError(TITLE, operation, _asset(table), "not found", f"table {table} has no tag {ref}")
        return tags[ref]

    def export(self, table: str, version: int | str | None = None) -> tuple[list[dict[str, Any]], TableState]:
        """Every row of the table (at ``version``, a number or a tag; default: the current
        one) in canonical order, and its state: version, row count, sha256 over the
        canonical JSON of the rows, ids, schema."""
        operation = "export table"
        handle = self._open(table, operation)
        try:
            if version is not None:
                handle.checkout(version)
            rows = handle.to_arrow().to_pylist()
            schema = str(handle.schema)
            at = int(handle.version)
        except ValueError as exc:
            raise ConnectorError(TITLE, operation, _asset(table), "not found", _short(exc)) from exc
        except Exception as exc:
            raise ConnectorError(TITLE, operation, _asset(table), "error", _short(exc)) from exc
        keyed = [{"id": str(row.get(self.id_column, "")), "row": row} for row in rows]
        canonical = canonical_records(keyed, frozenset())  # arrow floats are exact: repr is stable
        has_ids = bool(rows) and self.id_column in rows[0]
        ids = sorted(str(row[self.id_column]) for row in rows) if has_ids else []
        state = TableState(at, len(rows), hashlib.sha256(canonical).hexdigest(), ids, schema)
        return [k["row"] for k in sorted(keyed, key=lambda k: str(k["id"]))], state

    # -- changes ------------------------------------------------------------------------
    def create_example_table(self, table: str) -> None:
        """A one-row table (the connector's example change tags it: an empty database has none)."""
        self._guard("create table", _asset(table))
        db = self._connect("create table", _asset(table))
        if table not in db.table_names():
            db.create_table(table, data=[{self.id_column: "1", "text": "example"}])

    def tag_version(self, table: str, tag: str, version: int | None = None) -> dict[str, Any]:
        """Tag ``version`` (default: the current one). The same tag on the same version again
        is harmless; the tag on another version is a conflict, never moved silently."""
        operation = "tag version"
        _check(TAG_NAME, tag, "tag")
        handle = self._open(table, operation)
        target = int(handle.version) if version is None else version
        existing = self.tags(table)
        if tag in existing:
            if existing[tag] == target:
                return {"already": True, "tag": tag, "version": target}
            raise ConnectorError(
                TITLE, operation, _asset(table), "conflict", f"tag {tag} already names version {existing[tag]}"
            )
        self._guard(operation, _asset(table), f"tags.create({tag!r}, {target})")
        try:
            handle.tags.create(tag, target)
        except Exception as exc:
            raise ConnectorError(TITLE, operation, _asset(table), "error", _short(exc)) from exc
        return {"already": False, "tag": tag, "version": target}

    def untag(self, table: str, tag: str) -> dict[str, Any]:
        """Delete the tag (the version it named stays); an absent tag is harmless."""
        operation = "delete tag"
        _check(TAG_NAME, tag, "tag")
        handle = self._open(table, operation)
        existing = self.tags(table)
        if tag not in existing:
            return {"already": True, "tag": tag, "version": None}
        self._guard(operation, _asset(table), f"tags.delete({tag!r})")
        try:
            handle.tags.delete(tag)
        except Exception as exc:
            raise ConnectorError(TITLE, operation, _asset(table), "error", _short(exc)) from exc
        return {"already": False, "tag": tag, "version": existing[tag]}

    def restore_version(self, table: str, ref: int | str) -> dict[str, Any]:
        """Make the table's current content equal to version/tag ``ref`` (a new version).

        Records the version that was current before, so the inverse restores it. When the
        current content already equals ``ref``'s, nothing is written.
        """
        operation = "restore version"
        target = self.resolve(table, ref, operation)
        _, current = self.export(table)
        _, wanted = self.export(table, target)
        result: dict[str, Any] = {
            "restored_to": ref,
            "restored_version": target,
            "previous_version": current.version,
            "previous_sha256": current.sha256,
            "expected_sha256": wanted.sha256,
            "expected_rows": wanted.row_count,
        }
        if current.sha256 == wanted.sha256 and current.schema == wanted.schema:
            return {**result, "already": True, "new_version": current.version}
        self._guard(operation, _asset(table), f"restore({target}) over current version {current.version}")
        handle = self._open(table, operation)
        try:
            handle.restore(target)
            new_version = int(handle.version)
        except Exception as exc:
            raise ConnectorError(TITLE, operation, _asset(table), "error", _short(exc)) from exc
        return {**result, "already": False, "new_version": new_version}


def _asset(table: str) -> str:
    return f"table {table}"


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


SYSTEM = System(
    name="lancedb",
    title=TITLE,
    settings=LanceDBSettings,
    required=("uri",),
    build=lambda s, o: LanceDBStore(str(s.uri), plan=o.plan),
    stand_in=StandIn.embedded,
    url_field=None,
    example_change=lambda c: c.tag_version("conformance", "conformance-tag"),
    example_setup=lambda c: c.create_example_table("conformance"),
)
