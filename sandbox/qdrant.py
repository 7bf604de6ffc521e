"""A stand-in for Qdrant's REST API: collections, points, snapshots and aliases.

Modeled on Qdrant 1.x (``lib/api`` OpenAPI and ``lib/storage``'s behaviour), single node:

- every request needs the key in ``api-key`` (or ``Authorization: Bearer``): none or a wrong
  one gets 401 with Qdrant's plain-text body ("Must provide an API key or an Authorization
  bearer token" / "Invalid API key or JWT"); the read-only key gets 403 on anything that
  writes (points, aliases, snapshots);
- answers are ``{"result": ..., "status": "ok", "time": <seconds>}``; errors are
  ``{"status": {"error": "Not found: Collection `x` doesn't exist!"}, "time": ...}`` with 404 for
  a missing collection, 400 for a body that does not deserialize ("Json deserialize error: ...")
  or a bad request, 409 when an alias would shadow a collection, 422 for a checksum that is not
  a sha256 ("Validation error in JSON body: ...");
- a name that is an alias resolves to its collection for reads, points, snapshots and
  recovery (``GET /collections/{alias}`` reads the target), not for ``GET /collections/{name}/aliases``;
- ``POST /collections/aliases`` applies its actions atomically (all or none); ``create_alias``
  needs an existing collection and overwrites an existing alias, ``delete_alias`` of a missing
  alias is accepted, ``rename_alias`` of a missing alias is a 404;
- ``POST /collections/{name}/snapshots`` captures the collection's config and points in a
  snapshot file named ``{collection}-{peer id}-{YYYY-MM-DD-HH-MM-SS}.snapshot`` whose sha256 is
  its ``checksum``; ``GET .../snapshots/{snapshot}`` downloads the file;
- ``PUT /collections/{name}/snapshots/recover {"location", "priority"?, "checksum"?, "api_key"?}``
  restores a snapshot over the collection (created when missing; vectors config must match):
  ``location`` is ``file:///qdrant/snapshots/{collection}/{snapshot}`` or the snapshot's URL on
  this server, which Qdrant downloads with ``api_key`` (without the right key the download is
  refused, as it would be by the real server); a given ``checksum`` must match the file;
- scroll pages by point id (integers before UUIDs) with ``next_page_offset``; ``points/delete``
  of ids that are not there is accepted.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PointId = int | str
SNAPSHOTS_PATH = "/qdrant/snapshots"
PEER_ID = 5217403823617549


@dataclass
class Collection:
    vectors: dict[str, Any]
    points: dict[PointId, dict[str, Any]] = field(default_factory=dict)  # id -> {"vector", "payload"}


@dataclass
class Snapshot:
    name: str
    collection: str
    creation_time: str
    content: bytes  # the snapshot file

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def description(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "creation_time": self.creation_time,
            "size": len(self.content),
            "checksum": self.checksum,
        }


@dataclass
class QdrantState:
    api_key: str
    read_only_api_key: str | None = None
    collections: dict[str, Collection] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> collection
    snapshots: dict[str, dict[str, Snapshot]] = field(default_factory=dict)  # collection -> name -> snapshot
    requests: list[tuple[str, str]] = field(default_factory=list)
    operation_id: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)

    # -- seeding (tests and the sandbox) ---------------------------------------------------
    def add_collection(self, name: str, size: int = 4, distance: str = "Cosine") -> None:
        with self.lock:
            self.collections[name] = Collection(vectors={"size": size, "distance": distance})

    def upsert(self, collection: str, points: list[dict[str, Any]]) -> None:
        with self.lock:
            target = self.collections[collection]
            for point in points:
                target.points[_point_id(point["id"])] = {
                    "vector": list(point["vector"]),
                    "payload": dict(point.get("payload") or {}),
                }

    def resolve(self, name: str) -> str:
        """The collection a name designates (an alias resolves to its collection)."""
        with self.lock:
            return self.aliases.get(name, name)

    def point_ids(self, name: str) -> list[PointId]:
        with self.lock:
            return sorted(self.collections[self.resolve(name)].points, key=_order)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateAlias(_Strict):
    collection_name: str
    alias_name: str


class DeleteAlias(_Strict):
    alias_name: str


class RenameAlias(_Strict):
    old_alias_name: str
    new_alias_name: str


class AliasAction(_Strict):
    create_alias: CreateAlias | None = None
    delete_alias: DeleteAlias | None = None
    rename_alias: RenameAlias | None = None


class ChangeAliases(_Strict):
    actions: list[AliasAction]
    timeout: int | None = None


class SnapshotRecover(_Strict):
    location: str
    priority: Literal["replica", "snapshot", "no_sync"] | None = None
    checksum: str | None = None
    api_key: str | None = None


class ScrollRequest(BaseModel):
    offset: int | str | None = None
    limit: int = Field(10, ge=1)
    with_payload: bool | list[str] = True
    with_vector: bool | list[str] = False
    filter: dict[str, Any] | None = None
    order_by: Any = None


class DeletePoints(BaseModel):
    points: list[int | str] | None = None
    filter: dict[str, Any] | None = None
    shard_key: Any = None


class RetrievePoints(BaseModel):
    ids: list[int | str]
    with_payload: bool | list[str] = True
    with_vector: bool | list[str] = False


class UpsertPoints(BaseModel):
    points: list[dict[str, Any]]


class SearchRequest(BaseModel):
    vector: list[float]
    limit: int = Field(10, ge=1)
    with_payload: bool | list[str] = True
    with_vector: bool | list[str] = False


class CreateCollection(BaseModel):
    vectors: dict[str, Any]


class QdrantError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _point_id(value: Any) -> PointId:
    if isinstance(value, bool):
        raise QdrantError(400, "Json deserialize error: invalid point id")
    if isinstance(value, int):
        if value < 0:
            raise QdrantError(400, "Json deserialize error: point id must be an unsigned integer or a UUID")
        return value
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise QdrantError(400, f"Bad request: Unable to parse UUID: {value[:64]}") from None
    raise QdrantError(400, "Json deserialize error: invalid point id")


def _order(point_id: PointId) -> tuple[int, int, str]:
    return (0, point_id, "") if isinstance(point_id, int) else (1, 0, point_id)


def _not_found(name: str) -> QdrantError:
    return QdrantError(404, f"Not found: Collection `{name}` doesn't exist!")


def _parse(model: type[BaseModel], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise QdrantError(400, f"Json deserialize error: {first['msg']} at `{where}`") from None


def _render(point_id: PointId, point: dict[str, Any], with_payload: Any, with_vector: Any) -> dict[str, Any]:
    shown: dict[str, Any] = {"id": point_id}
    shown["payload"] = copy.deepcopy(point["payload"]) if with_payload else None
    if with_vector:
        shown["vector"] = list(point["vector"])
    return shown


def create_app(state: QdrantState) -> FastAPI:
    app = FastAPI(title="Qdrant REST API (aisoar sandbox)")
    app.state.fake = state

    def answer(result: Any, started: float) -> JSONResponse:
        return JSONResponse({"result": result, "status": "ok", "time": round(time.monotonic() - started, 6)})

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Response:
        with state.lock:
            state.requests.append((request.method, request.url.path))
        key = request.headers.get("api-key")
        if key is None:
            bearer = request.headers.get("authorization", "")
            key = bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else None
        if key is None:
            return PlainTextResponse("Must provide an API key or an Authorization bearer token", status_code=401)
        writes = request.method not in {"GET", "HEAD"} and not request.url.path.endswith(("/scroll", "/search"))
        writes = writes and not (
            request.method == "POST" and re.fullmatch(r"/collections/[^/]+/points", request.url.path)
        )
        if key == state.api_key:
            pass
        elif state.read_only_api_key and key == state.read_only_api_key:
            if writes:
                return JSONResponse(
                    status_code=403,
                    content={"status": {"error": "Forbidden: Write access is required"}, "time": 0.0},
                )
        else:
            return PlainTextResponse("Invalid API key or JWT", status_code=401)
        response: Response = await call_next(request)
        return response

    @app.exception_handler(QdrantError)
    async def qdrant_error(request: Request, exc: QdrantError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={"status": {"error": exc.message}, "time": 0.0})

    async def body_of(request: Request) -> Any:
        raw = await request.body()
        if not raw:
            raise QdrantError(400, "Json deserialize error: EOF while parsing a value at line 1 column 0")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise QdrantError(400, f"Json deserialize error: {exc}") from None

    def collection(name: str) -> tuple[str, Collection]:
        real = state.resolve(name)
        found = state.collections.get(real)
        if found is None:
            raise _not_found(name)
        return real, found

    # -- collections ------------------------------------------------------------------------
    @app.get("/collections")
    def list_collections() -> JSONResponse:
        started = time.monotonic()
        with state.lock:
            return answer({"collections": [{"name": n} for n in sorted(state.collections)]}, started)

    @app.get("/collections/aliases")
    def list_aliases() -> JSONResponse:
        started = time.monotonic()
        with state.lock:
            aliases = [{"alias_name": a, "collection_name": c} for a, c in sorted(state.aliases.items())]
        return answer({"aliases": aliases}, started)

    @app.post("/collections/aliases")
    async def change_aliases(request: Request) -> JSONResponse:
        started = time.monotonic()
        change: ChangeAliases = _parse(ChangeAliases, await body_of(request))
        with state.lock:
            aliases = dict(state.aliases)  # applied all at once, or not at all
            for action in change.actions:
                given = [op for op in (action.create_alias, action.delete_alias, action.rename_alias) if op]
                if len(given) != 1:
                    raise QdrantError(400, "Json deserialize error: data did not match any variant of AliasOperations")
                if action.create_alias:
                    op = action.create_alias
                    if op.collection_name not in state.collections:
                        raise _not_found(op.collection_name)
                    if op.alias_name in state.collections:
                        raise QdrantError(409, f"Wrong input: Collection `{op.alias_name}` already exists!")
                    aliases[op.alias_name] = op.collection_name
                elif action.delete_alias:
                    aliases.pop(action.delete_alias.alias_name, None)
                elif action.rename_alias:
                    old = action.rename_alias.old_alias_name
                    if old not in aliases:
                        raise QdrantError(404, f"Not found: Alias {old} does not exists!")
                    aliases[action.rename_alias.new_alias_name] = aliases.pop(old)
            state.aliases = aliases
        return answer(True, started)

    @app.get("/collections/{name}")
    def get_collection(name: str) -> JSONResponse:
        started = time.monotonic()
        with state.lock:
            _, found = collection(name)
            count = len(found.points)
            info = {
                "status": "green",
                "optimizer_status": "ok",
                "indexed_vectors_count": count,
                "points_count": count,
                "segments_count": 2,
                "config": {
                    "params": {
                        "vectors": dict(found.vectors),
                        "shard_number": 1,
                        "replication_factor": 1,
                        "write_consistency_factor": 1,
                        "on_disk_payload": True,
                    },
                    "hnsw_config": {
                        "m": 16,
                        "ef_construct": 100,
                        "full_scan_threshold": 10000,
                        "max_indexing_threads": 0,
                        "on_disk": False,
                    },
                    "optimizer_config": {
                        "deleted_threshold": 0.2,
                        "vacuum_min_vector_number": 1000,
                        "default_segment_number": 0,
                        "flush_interval_sec": 5,
                    },
                    "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
                    "quantization_config": None,
                },
                "payload_schema": {},
            }
        return answer(info, started)

    @app.put("/collections/{name}")
    async def create_collection(name: str, request: Request) -> JSONResponse:
        started = time.monotonic()
        create: CreateCollection = _parse(CreateCollection, await body_of(request))
        with state.lock:
            if name in state.collections or name in state.aliases:
                raise QdrantError(409, f"Wrong input: Collection `{name}` already exists!")
            state.collections[name] = Collection(vectors=dict(create.vectors))
        return answer(True, started)

    @app.get("/collections/{name}/aliases")
    def collection_aliases(name: str) -> JSONResponse:
        started = time.monotonic()
        with state.lock:
            if name not in state.collections:
                raise _not_found(name)
            aliases = [{"alias_name": a, "collection_name": c} for a, c in sorted(state.aliases.items()) if c == name]
        return answer({"aliases": aliases}, started)

    # -- points -------------------------------------------------------------------------------
    def next_op() -> dict[str, Any]:
        state.operation_id += 1
        return {"operation_id": state.operation_id, "status": "completed"}

    @app.put("/collections/{name}/points")
    async def upsert_points(name: str, request: Request) -> JSONResponse:
        started = time.monotonic()
        upsert: UpsertPoints = _parse(UpsertPoints, await body_of(request))
        with state.lock:
            _, found = collection(name)
            size = found.vectors.get("size")
            for point in upsert.points:
                vector = point.get("vector")
                if not isinstance(vector, list) or len(vector) != size:
                    got = len(vector) if isinstance(vector, list) else 0
                    raise QdrantError(400, f"Wrong input: Vector dimension error: expected dim: {size}, got {got}")
            for point in upsert.points:
                found.points[_point_id(point.get("id"))] = {
                    "vector": list(point["vector"]),
                    "payload": dict(point.get("payload") or {}),
                }
            return answer(next_op(), started)

    @app.post("/collections/{name}/points")
    async def retrieve_points(name: str, request: Request) -> JSONResponse:
        started = time.monotonic()
        wanted: RetrievePoints = _parse(RetrievePoints, await body_of(request))
        with state.lock:
            _, found = collection(name)
            ids = [_point_id(i) for i in wanted.ids]
            points = [
                _render(i, found.points[i], wanted.with_payload, wanted.with_vector) for i in ids if i in found.points
            ]
        return answer(points, started)

    @app.post("/collections/{name}/points/scroll")
    async def scroll(name: str, request: Request) -> JSONResponse:
        started = time.monotonic()
        raw = await request.body()
        scroll_request: ScrollRequest = _parse(ScrollRequest, json.loads(raw) if raw else {})
        with state.lock:
            _, found = collection(name)
            ids = sorted(found.points, key=_order)
            if scroll_request.offset is not None:
                start = _order(_point_id(scroll_request.offset))
                ids = [i for i in ids if _order(i) >= start]
            page = ids[: scroll_request.limit]
            rest = ids[scroll_request.limit :]
            points = [
                _render(i, found.points[i], scroll_request.with_payload, scroll_request.with_vector) for i in page
            ]
        return answer({"points": points, "next_page_offset": rest[0] if rest else None}, started)

    @app.post("/collections/{name}/points/search")
    async def search(name: str, request: Request) -> JSONResponse:
        started = time.monotonic()
        query: SearchRequest = _parse(SearchRequest, await body_of(request))
        with state.lock:
            _, found = collection(name)
            scored = []
            for point_id, point in found.points.items():
                score = sum(a * b for a, b in zip(query.vector, point["vector"], strict=False))
                shown = _render(point_id, point, query.with_payload, query.with_vector)
                scored.append({"id": point_id, "version": 1, "score": score, **shown})
        scored.sort(key=lambda hit: -float(hit["score"]))
        return answer(scored[: query.limit], started)

    @app.post("/collections/{name}/points/delete")
    async def delete_points(name: str, request: Request) -> JSONResponse:
        started = time.monotonic()
        delete: DeletePoints = _parse(DeletePoints, await body_of(request))
        if delete.points is None:
            raise QdrantError(400, "Bad request: only deletion by `points` is supported by this sandbox")
        with state.lock:
            _, found = collection(name)
            for point_id in [_point_id(i) for i in delete.points]:
                found.points.pop(point_id, None)
            return answer(next_op(), started)

    # -- snapshots ------------------------------------------------------------------------------
    @app.get("/collections/{name}/snapshots")
    def list_snapshots(name: str) -> JSONResponse:
        started = time.monotonic()
        with state.lock:
            real, _ = collection(name)
            snaps = sorted(state.snapshots.get(real, {}).values(), key=lambda s: s.name)
            return answer([s.description() for s in snaps], started)

    @app.post("/collections/{name}/snapshots")
    def create_snapshot(name: str) -> JSONResponse:
        started = time.monotonic()
        with state.lock:
            real, found = collection(name)
            taken = state.snapshots.setdefault(real, {})
            moment = datetime.now(UTC).replace(microsecond=0)
            snap_name = f"{real}-{PEER_ID}-{moment:%Y-%m-%d-%H-%M-%S}.snapshot"
            while snap_name in taken:  # one per second on a real node; keep names unique here
                moment += timedelta(seconds=1)
                snap_name = f"{real}-{PEER_ID}-{moment:%Y-%m-%d-%H-%M-%S}.snapshot"
            points = [
                {"id": i, "vector": found.points[i]["vector"], "payload": found.points[i]["payload"]}
                for i in sorted(found.points, key=_order)
            ]
            content = json.dumps(
                {"collection": real, "config": {"vectors": found.vectors}, "points": points}, sort_keys=True
            ).encode()
            snap = Snapshot(snap_name, real, moment.replace(tzinfo=None).isoformat(), content)
            taken[snap_name] = snap
            return answer(snap.description(), started)

    @app.get("/collections/{name}/snapshots/{snapshot}")
    def download_snapshot(name: str, snapshot: str) -> Response:
        with state.lock:
            real, _ = collection(name)
            snap = state.snapshots.get(real, {}).get(snapshot)
            if snap is None:
                raise QdrantError(404, f"Not found: Snapshot {snapshot} not found")
            return Response(snap.content, media_type="application/octet-stream")

    def locate(recover: SnapshotRecover) -> Snapshot:
        location = urlparse(recover.location)
        if location.scheme == "file":
            path = unquote(location.path)
            match = re.fullmatch(re.escape(SNAPSHOTS_PATH) + r"/([^/]+)/([^/]+)", path)
            snap = state.snapshots.get(match.group(1), {}).get(match.group(2)) if match else None
            if snap is None:
                raise QdrantError(404, f"Not found: Snapshot file {path} does not exist")
            return snap
        if location.scheme in {"http", "https"}:
            match = re.fullmatch(r"/collections/([^/]+)/snapshots/([^/]+)", unquote(location.path))
            if recover.api_key != state.api_key:  # the server downloads the file with the key it was given
                raise QdrantError(
                    400, f"Bad request: Failed to download snapshot from {location.netloc}: status - 401 Unauthorized"
                )
            source = state.resolve(match.group(1)) if match else ""
            snap = state.snapshots.get(source, {}).get(match.group(2)) if match else None
            if snap is None:
                raise QdrantError(
                    400, f"Bad request: Failed to download snapshot from {location.netloc}: status - 404 Not Found"
                )
            return snap
        raise QdrantError(400, f"Bad request: Unsupported snapshot location scheme: {location.scheme[:16]}")

    @app.put("/collections/{name}/snapshots/recover")
    async def recover_snapshot(name: str, request: Request) -> JSONResponse:
        started = time.monotonic()
        recover: SnapshotRecover = _parse(SnapshotRecover, await body_of(request))
        if recover.checksum is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", recover.checksum):
            raise QdrantError(422, "Validation error in JSON body: [checksum: invalid SHA256 hash]")
        with state.lock:
            snap = locate(recover)
            if recover.checksum is not None and recover.checksum.lower() != snap.checksum:
                raise QdrantError(
                    400, f"Bad request: Snapshot checksum mismatch: expected {recover.checksum}, got {snap.checksum}"
                )
            content = json.loads(snap.content)
            real = state.resolve(name)
            target = state.collections.get(real)
            vectors = content["config"]["vectors"]
            if target is None:
                target = state.collections[real] = Collection(vectors=dict(vectors))
            elif target.vectors != vectors:
                raise QdrantError(
                    400,
                    "Bad request: Snapshot is not compatible with existing collection: "
                    f"Collection vectors: {target.vectors} Snapshot Vectors: {vectors}",
                )
            target.points = {
                _point_id(p["id"]): {"vector": list(p["vector"]), "payload": dict(p["payload"])}
                for p in content["points"]
            }
        return answer(True, started)

    @app.delete("/collections/{name}/snapshots/{snapshot}")
    def delete_snapshot(name: str, snapshot: str) -> JSONResponse:
        started = time.monotonic()
        with state.lock:
            real, _ = collection(name)
            if state.snapshots.get(real, {}).pop(snapshot, None) is None:
                raise QdrantError(404, f"Not found: Snapshot {snapshot} not found")
        return answer(True, started)

    return app
