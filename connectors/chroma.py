"""Chroma 1.x over its REST API v2: export a collection (evidence), quarantine it by renaming
it, release it, and restore it under its original name without the poisoned records.

Chroma has no snapshot API. The export is a paginated ``get`` (documents, metadatas,
embeddings) serialised canonically (sorted by id, floats at float32 precision, sorted keys)
so the same content always gives the same sha256. Quarantine renames the collection so a
RAG application that opens it by name can no longer read it; nothing is deleted.

No ``chromadb`` import here: the client library is heavy and not needed for a few REST calls.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pydantic import SecretStr

from connectors.errors import ConnectorError, Planned
from connectors.system import StandIn, System, SystemSettings, optional_secret
from connectors.transport import HttpApi

TITLE = "Chroma"


class ChromaSettings(SystemSettings):
    url: str | None = None
    token: SecretStr | None = None
    tenant: str = "default_tenant"
    database: str = "default_database"
PAGE_SIZE = 100
QUARANTINE_MARK = "__quarantined__"
RESTORED_FROM_KEY = "aisoar_restored_from"
# Chroma's own rule for collection names: 3-512 characters from [a-zA-Z0-9._-], starting and
# ending with a letter or digit.
COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")
RECORD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,255}$")
_TENANT_OR_DATABASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MAX_NAME = 512


@dataclass(frozen=True)
class Collection:
    id: str
    name: str
    metadata: dict[str, Any] | None
    configuration: dict[str, Any] | None


def quarantine_name(name: str, incident_id: str) -> str:
    """``<name>__quarantined__<incident id>``, the incident id reduced to Chroma's name alphabet."""
    tag = re.sub(r"[^A-Za-z0-9._-]+", "-", incident_id).strip("._-") or "incident"
    candidate = f"{name}{QUARANTINE_MARK}{tag}"
    return candidate[:_MAX_NAME].rstrip("._-")


def canonical_records(records: list[dict[str, Any]], float32_keys: frozenset[str] = frozenset({"embedding"})) -> bytes:
    """The canonical bytes of an export: records sorted by id, keys sorted, no whitespace.

    Vectors (the values under ``float32_keys``) are stored as float32: each is written at
    float32 precision with 9 significant digits, which round-trips float32 exactly, so the
    same vector gives the same bytes whichever way a server serialised it. Other floats
    (metadata) are float64 and written as Python's shortest repr.
    """
    stable = [{k: _stable(v, k in float32_keys) for k, v in r.items()} for r in records]
    ordered = sorted(stable, key=lambda r: str(r["id"]))
    return json.dumps(ordered, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def content_sha256(records: list[dict[str, Any]]) -> str:
    """sha256 over the canonical export without the vectors: ids, documents, metadata."""
    return hashlib.sha256(
        canonical_records([{k: v for k, v in r.items() if k != "embedding"} for r in records])
    ).hexdigest()


def vector_drift(expected: list[dict[str, Any]], actual: list[dict[str, Any]]) -> float:
    """The largest difference between the vectors of records with the same id (relative to
    the value, at least 1); ``inf`` when ids or dimensions differ."""
    by_id = {r["id"]: r.get("embedding") for r in actual}
    worst = 0.0
    for record in expected:
        if record["id"] not in by_id:
            return float("inf")
        a, b = record.get("embedding"), by_id[record["id"]]
        if a is None or b is None:
            if a is not b:
                return float("inf")
            continue
        if len(a) != len(b):
            return float("inf")
        for x, y in zip(a, b, strict=True):
            worst = max(worst, abs(x - y) / max(1.0, abs(x)))
    return worst


def _stable(value: Any, as_float32: bool = False) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not as_float32:
            return value
        rounded = struct.unpack("f", struct.pack("f", value))[0]
        return float(format(rounded, ".9g"))
    if isinstance(value, dict):
        return {str(k): _stable(v, as_float32) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stable(v, as_float32) for v in value]
    return str(value)


def _check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"not a valid Chroma {what}: {value[:80]!r}")
    return value


class ChromaStore:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        tenant: str = "default_tenant",
        database: str = "default_database",
        timeout: float = 10.0,
        page_size: int = PAGE_SIZE,
        **retry: Any,
    ) -> None:
        headers = {"x-chroma-token": token} if token else {}
        self._api = HttpApi(TITLE, base_url, headers, timeout=timeout, **retry)
        self._api.identify = self.check
        self._has_token = bool(token)
        self._tenant = _check(_TENANT_OR_DATABASE, tenant, "tenant")
        self._database = _check(_TENANT_OR_DATABASE, database, "database")
        self.page_size = page_size
        self._base64: bool | None = None

    def close(self) -> None:
        self._api.close()

    @property
    def _base(self) -> str:
        return f"/api/v2/tenants/{quote(self._tenant, safe='')}/databases/{quote(self._database, safe='')}"

    def _collections(self) -> str:
        return f"{self._base}/collections"

    def _by_id(self, collection_id: str) -> str:
        return f"{self._base}/collections/{quote(collection_id, safe='')}"

    # -- reads --------------------------------------------------------------------------
    def check(self) -> str:
        """One cheap authenticated read: count the collections of the configured database."""
        response = self._api.request(
            "GET", f"{self._base}/collections_count", "count collections", f"database {self._database}"
        )
        auth = "token accepted" if self._has_token else "no token configured"
        return f"Chroma reachable, {auth} ({response.json()} collection(s) in {self._database})"

    def get_collection(self, name: str) -> Collection | None:
        """The collection named ``name``, or None when no collection has that name."""
        _check(COLLECTION_NAME, name, "collection name")
        response = self._api.request(
            "GET",
            f"{self._collections()}/{quote(name, safe='')}",
            "read collection",
            _asset(name),
            ok=(200, 404),
        )
        if response.status_code == 404:
            return None
        body = response.json()
        if not isinstance(body, dict) or "id" not in body:
            raise ConnectorError(TITLE, "read collection", _asset(name), response.status_code, "unexpected answer")
        metadata = body.get("metadata")
        configuration = body.get("configuration_json")
        return Collection(
            id=str(body["id"]),
            name=str(body.get("name", name)),
            metadata=metadata if isinstance(metadata, dict) else None,
            configuration=configuration if isinstance(configuration, dict) else None,
        )

    def require(self, name: str, operation: str) -> Collection:
        found = self.get_collection(name)
        if found is None:
            raise ConnectorError(TITLE, operation, _asset(name), 404, f"Collection [{name}] does not exist")
        return found

    def count(self, collection: Collection) -> int:
        path = f"{self._by_id(collection.id)}/count"
        response = self._api.request("GET", path, "count records", _asset(collection.name))
        return int(response.json())

    def export(self, collection: Collection) -> tuple[list[dict[str, Any]], str, int]:
        """Every record (id, document, metadata, embedding) read page by page; returns the
        records sorted by id, the sha256 of their canonical JSON, and the number of pages."""
        asset = _asset(collection.name)
        expected = self.count(collection)
        records: dict[str, dict[str, Any]] = {}
        pages = 0
        offset = 0
        # a server that ignores ``offset`` (or keeps growing) must not page forever
        max_pages = expected // self.page_size + 2
        while True:
            if pages >= max_pages:
                raise ConnectorError(
                    TITLE,
                    "export records",
                    asset,
                    "inconsistent",
                    f"counted {expected} records but {pages} pages of {self.page_size} did not end the export",
                )
            body = {
                "limit": self.page_size,
                "offset": offset,
                "include": ["documents", "metadatas", "embeddings"],
            }
            response = self._api.request(
                "POST", f"{self._by_id(collection.id)}/get", "export records", asset, json=body, changes=False
            )
            page = response.json()
            if not isinstance(page, dict):
                raise ConnectorError(TITLE, "export records", asset, response.status_code, "unexpected answer")
            ids = page.get("ids") or []
            documents = page.get("documents") or [None] * len(ids)
            metadatas = page.get("metadatas") or [None] * len(ids)
            embeddings = page.get("embeddings") or [None] * len(ids)
            pages += 1
            for i, record_id in enumerate(ids):
                records[str(record_id)] = {
                    "id": str(record_id),
                    "document": documents[i],
                    "metadata": metadatas[i],
                    "embedding": embeddings[i],
                }
            offset += len(ids)
            if len(ids) < self.page_size:
                break
        if len(records) != expected:
            raise ConnectorError(
                TITLE,
                "export records",
                asset,
                "inconsistent",
                f"counted {expected} records but read {len(records)}: the collection changed during the export",
            )
        canonical = canonical_records(list(records.values()))
        ordered: list[dict[str, Any]] = json.loads(canonical)
        return ordered, hashlib.sha256(canonical).hexdigest(), pages

    def present_ids(self, collection: Collection, ids: list[str]) -> list[str]:
        """Which of ``ids`` the collection holds."""
        if not ids:
            return []
        response = self._api.request(
            "POST",
            f"{self._by_id(collection.id)}/get",
            "look up records",
            _asset(collection.name),
            json={"ids": ids, "include": []},
            changes=False,
        )
        body = response.json()
        found = body.get("ids") if isinstance(body, dict) else None
        return sorted(str(i) for i in found or [])

    # -- changes ------------------------------------------------------------------------
    def rename(self, collection: Collection, new_name: str, operation: str) -> None:
        """Rename; the caller has checked that ``new_name`` is free (Chroma answers a taken
        name with HTTP 500, which would otherwise be retried)."""
        _check(COLLECTION_NAME, new_name, "collection name")
        self._api.request(
            "PUT",
            self._by_id(collection.id),
            operation,
            _asset(collection.name),
            json={"new_name": new_name},
        )

    def create_collection(
        self, name: str, metadata: dict[str, Any] | None, configuration: dict[str, Any] | None
    ) -> Collection:
        _check(COLLECTION_NAME, name, "collection name")
        body: dict[str, Any] = {"name": name, "metadata": metadata or None, "get_or_create": False}
        if configuration:
            body["configuration"] = configuration
        response = self._api.request("POST", self._collections(), "create collection", _asset(name), json=body)
        answer = response.json()
        return Collection(
            id=str(answer["id"]),
            name=name,
            metadata=answer.get("metadata") if isinstance(answer.get("metadata"), dict) else None,
            configuration=configuration,
        )

    def upsert(self, collection: Collection, records: list[dict[str, Any]], operation: str) -> None:
        """Write ``records`` in pages; upsert, so writing the same records twice is harmless."""
        for start in range(0, len(records), self.page_size):
            page = records[start : start + self.page_size]
            embeddings = [r["embedding"] for r in page]
            body = {
                "ids": [r["id"] for r in page],
                "embeddings": [_pack(e) for e in embeddings] if self._base64_vectors() else embeddings,
                "documents": [r["document"] for r in page],
                "metadatas": [r["metadata"] or None for r in page],
            }
            self._api.request(
                "POST", f"{self._by_id(collection.id)}/upsert", operation, _asset(collection.name), json=body
            )

    def _base64_vectors(self) -> bool:
        """Whether the server takes vectors as base64 float32 (as Chroma's own client sends
        them): exact bits, where JSON decimals can be parsed one float32 step off."""
        if self._base64 is None:
            response = self._api.request("GET", "/api/v2/pre-flight-checks", "read server limits", "the server")
            body = response.json()
            self._base64 = bool(body.get("supports_base64_encoding")) if isinstance(body, dict) else False
        return self._base64

    def delete_records(self, collection: Collection, ids: list[str], operation: str) -> None:
        self._api.request(
            "POST", f"{self._by_id(collection.id)}/delete", operation, _asset(collection.name), json={"ids": ids}
        )

    # -- the incident operations ----------------------------------------------------------
    def quarantine(self, name: str, incident_id: str) -> dict[str, Any]:
        """Rename ``name`` to its quarantine name so nothing can open it by its name.

        Already quarantined (the name is free and the quarantine name is taken) is a success
        that says so. If both names are taken (a copy was restored under the name, and the
        original is still quarantined), the copy is moved aside to the next free
        ``<quarantine name>-<n>``: the original quarantined data is never overwritten.
        """
        operation = "quarantine collection"
        qname = quarantine_name(name, incident_id)
        current = self.get_collection(name)
        held = self.get_collection(qname)
        if current is None:
            if held is None:
                raise ConnectorError(
                    TITLE, operation, _asset(name), 404, f"neither {name} nor {qname} exists: nothing to quarantine"
                )
            return {"already": True, "quarantine_name": qname, "collection_id": held.id}
        target = qname
        n = 2
        while held is not None:
            target = f"{qname}-{n}"[:_MAX_NAME]
            held = self.get_collection(target)
            n += 1
            if n > 100:
                raise ConnectorError(TITLE, operation, _asset(name), "conflict", "no free quarantine name")
        self.rename(current, target, operation)
        return {"already": False, "quarantine_name": target, "collection_id": current.id}

    def release(self, name: str, incident_id: str) -> dict[str, Any]:
        """Rename the quarantined collection back to ``name`` (the inverse of ``quarantine``)."""
        operation = "release collection"
        qname = quarantine_name(name, incident_id)
        current = self.get_collection(name)
        held = self.get_collection(qname)
        if held is None:
            if current is None:
                raise ConnectorError(
                    TITLE, operation, _asset(name), 404, f"neither {name} nor {qname} exists: nothing to release"
                )
            return {"already": True, "quarantine_name": qname, "collection_id": current.id}
        if current is not None:
            raise ConnectorError(
                TITLE,
                operation,
                _asset(name),
                409,
                f"{name} is taken (by a restored copy?) while {qname} is still quarantined; "
                f"quarantine {name} first, then release",
            )
        self.rename(held, name, operation)
        return {"already": False, "quarantine_name": qname, "collection_id": held.id}

    def restore_without(self, name: str, incident_id: str, poisoned_ids: list[str]) -> dict[str, Any]:
        """Create ``name`` again from its quarantined collection minus ``poisoned_ids``.

        The quarantined collection is read, never changed, so the poisoned data stays
        available as evidence. The copy keeps the original's metadata and index settings
        and is marked ``aisoar_restored_from``; records are upserted, so running it again
        (or after an interruption) is harmless. A collection under ``name`` that aisoar
        did not restore is never written into.
        """
        operation = "restore collection"
        for record_id in poisoned_ids:
            _check(RECORD_ID, record_id, "record id")
        qname = quarantine_name(name, incident_id)
        source = self.get_collection(qname)
        if source is None and self.plan and self.get_collection(name) is not None:
            # a simulation: the quarantine before this step was only planned
            raise Planned(
                TITLE, operation, _asset(name), f"create {name} from {qname} without {len(poisoned_ids)} record(s)"
            )
        if source is None:
            raise ConnectorError(
                TITLE, operation, _asset(name), 404, f"{qname} does not exist: quarantine the collection first"
            )
        records, source_sha256, _ = self.export(source)
        poisoned = set(poisoned_ids)
        keep = [r for r in records if r["id"] not in poisoned]
        removed = sorted(r["id"] for r in records if r["id"] in poisoned)
        expected_sha256 = hashlib.sha256(canonical_records(keep)).hexdigest()
        expected_content_sha256 = content_sha256(keep)
        target = self.get_collection(name)
        if target is None:
            metadata = dict(source.metadata or {})
            metadata[RESTORED_FROM_KEY] = qname
            target = self.create_collection(name, metadata, index_configuration(source))
            created = True
        elif (target.metadata or {}).get(RESTORED_FROM_KEY) == qname:
            created = False
        else:
            raise ConnectorError(
                TITLE,
                operation,
                _asset(name),
                409,
                f"{name} exists and was not restored by aisoar from {qname}; refusing to write into it",
            )
        leftover = self.present_ids(target, sorted(poisoned))
        if leftover:
            self.delete_records(target, leftover, operation)
        self.upsert(target, keep, operation)
        return {
            "quarantine_name": qname,
            "collection_id": target.id,
            "created": created,
            "original_count": len(records),
            "original_sha256": source_sha256,
            "removed_ids": removed,
            "not_found_ids": sorted(poisoned - set(removed)),
            "expected_count": len(keep),
            "expected_sha256": expected_sha256,
            "expected_content_sha256": expected_content_sha256,
        }

    @property
    def plan(self) -> bool:
        return self._api.plan


def index_configuration(collection: Collection) -> dict[str, Any] | None:
    """The part of a collection's configuration to give its restored copy: the index
    settings (distance space, HNSW/SPANN parameters), so queries rank the same way."""
    if not collection.configuration:
        return None
    kept = {k: v for k, v in collection.configuration.items() if k in {"hnsw", "spann"} and v}
    return kept or None


def _pack(vector: list[float] | None) -> str | None:
    if vector is None:
        return None
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _asset(name: str) -> str:
    return f"collection {name}"


SYSTEM = System(
    name="chroma",
    title=TITLE,
    settings=ChromaSettings,
    required=("url",),
    build=lambda s, o: ChromaStore(
        str(s.url), optional_secret(s.token), s.tenant, s.database, timeout=o.timeout, plan=o.plan, **o.retry
    ),
    stand_in=StandIn.server,
    example_change=lambda c: c.create_collection("aisoar-conformance", None, None),
)
