"""Qdrant's REST API: collection state, snapshots (create, list, recover), aliases, points.

A RAG application reads a Qdrant collection through an alias; containment re-points or
deletes the alias (atomic in one ``POST /collections/aliases``) so a poisoned collection is no
longer served, and recovery restores a snapshot taken before anything was changed.

Every name that reaches a URL is pattern-checked here and quoted, even though the actions
check it first: names come from alert data.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from connectors.errors import ConnectorError
from connectors.system import StandIn, System, SystemSettings, secret
from connectors.transport import HttpApi

TITLE = "Qdrant"


class QdrantSettings(SystemSettings):
    url: str | None = None
    api_key: SecretStr | None = None
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}$"
SNAPSHOT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,250}\.snapshot$"
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
SCROLL_PAGE = 256
# Qdrant's own refusals: not worth retrying, answered with {"status": {"error": ...}} (or plain text for 401)
REFUSALS = (400, 401, 403, 404, 409, 422)

PointId = int | str


class QdrantApi:
    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0, **retry: Any) -> None:
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self._api = HttpApi(TITLE, self.base_url, {"api-key": api_key}, timeout=timeout, **retry)
        self._api.identify = self.check

    def close(self) -> None:
        self._api.close()

    # -- plumbing --------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        operation: str,
        asset: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        changes: bool | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """The ``result`` of a Qdrant answer; ``None`` for a 404 when ``missing_ok``; else a
        ``ConnectorError`` carrying Qdrant's own message (never the key)."""
        try:
            response = self._api.request(
                method, path, operation, asset, ok=(200, *REFUSALS), json=json_body, params=params, changes=changes
            )
        except ConnectorError as exc:  # a 5xx text too (recover sends the key in its body)
            detail = exc.detail.replace(self._api_key, "[redacted]") if self._api_key else exc.detail
            raise ConnectorError(exc.system, exc.operation, exc.asset, exc.status, detail) from None
        if response.status_code == 200:
            body = response.json()
            return body.get("result") if isinstance(body, dict) else None
        if response.status_code == 404 and missing_ok:
            return None
        raise ConnectorError(TITLE, operation, asset, response.status_code, self._detail(response))

    def _detail(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            text = response.text
        else:
            status = body.get("status") if isinstance(body, dict) else None
            text = str(status.get("error")) if isinstance(status, dict) and "error" in status else str(body)
        return text.replace(self._api_key, "[redacted]")[:300] if self._api_key else text[:300]

    # -- reads -----------------------------------------------------------------------------
    def check(self) -> str:
        """One cheap authenticated read: list the collections."""
        result = self._call("GET", "/collections", "list collections", "the collection list")
        count = len(result.get("collections", [])) if isinstance(result, dict) else "?"
        return f"Qdrant reachable, API key accepted ({count} collections)"

    def collection_info(self, name: str) -> dict[str, Any] | None:
        """``GET /collections/{name}`` (an alias reads its collection), or None when there is none."""
        result = self._call("GET", f"/collections/{_name(name)}", "read collection", _asset(name), missing_ok=True)
        return result if isinstance(result, dict) else None

    def aliases(self) -> dict[str, str]:
        """Every alias and the collection it serves."""
        result = self._call("GET", "/collections/aliases", "list aliases", "the alias list")
        rows = result.get("aliases", []) if isinstance(result, dict) else []
        return {str(r["alias_name"]): str(r["collection_name"]) for r in rows if isinstance(r, dict)}

    def collection_aliases(self, name: str) -> list[str]:
        """The aliases that serve collection ``name`` (empty when it does not exist)."""
        result = self._call(
            "GET", f"/collections/{_name(name)}/aliases", "list collection aliases", _asset(name), missing_ok=True
        )
        rows = result.get("aliases", []) if isinstance(result, dict) else []
        return sorted(str(r["alias_name"]) for r in rows if isinstance(r, dict))

    def export(self, name: str, keep_payloads: int = 0) -> dict[str, Any]:
        """Read every point (id, payload, vector) page by page and digest them as Qdrant serves
        them (by point id): ``{"points", "sha256", "payloads", "payloads_truncated"}``, with the
        ids and payloads of the first ``keep_payloads`` points. Memory stays at one page: equal
        digests mean equal contents, the probe's test after a recovery."""
        digest = hashlib.sha256()
        payloads: list[dict[str, Any]] = []
        count = 0
        offset: PointId | None = None
        seen: set[str] = set()
        while True:
            body: dict[str, Any] = {"limit": SCROLL_PAGE, "with_payload": True, "with_vector": True}
            if offset is not None:
                body["offset"] = offset
            result = self._call(
                "POST",
                f"/collections/{_name(name)}/points/scroll",
                "scroll points",
                _asset(name),
                json_body=body,
                changes=False,
            )
            page = result.get("points", []) if isinstance(result, dict) else []
            for point in page:
                if not isinstance(point, dict):
                    continue
                row = {"id": point.get("id"), "payload": point.get("payload"), "vector": point.get("vector")}
                digest.update(json.dumps(row, sort_keys=True, separators=(",", ":"), default=str).encode() + b"\n")
                if count < keep_payloads:
                    payloads.append({"id": point.get("id"), "payload": point.get("payload")})
                count += 1
            offset = result.get("next_page_offset") if isinstance(result, dict) else None
            if offset is None or not page:
                break
            if json.dumps(offset) in seen:  # an offset served before would scroll forever
                raise ConnectorError(
                    TITLE, "scroll points", _asset(name), "inconsistent", "the scroll offset repeated itself"
                )
            seen.add(json.dumps(offset))
        return {
            "points": count,
            "sha256": digest.hexdigest(),
            "payloads": payloads,
            "payloads_truncated": count > len(payloads) and keep_payloads > 0,
        }

    def retrieve(self, name: str, ids: list[PointId]) -> list[dict[str, Any]]:
        """The points among ``ids`` that exist (payload and vector)."""
        result = self._call(
            "POST",
            f"/collections/{_name(name)}/points",
            "retrieve points",
            _asset(name),
            json_body={"ids": [_point_id(i) for i in ids], "with_payload": True, "with_vector": True},
            changes=False,
        )
        return [p for p in result if isinstance(p, dict)] if isinstance(result, list) else []

    def list_snapshots(self, name: str) -> list[dict[str, Any]]:
        result = self._call("GET", f"/collections/{_name(name)}/snapshots", "list snapshots", _asset(name))
        return [s for s in result if isinstance(s, dict)] if isinstance(result, list) else []

    # -- changes -----------------------------------------------------------------------------
    def create_snapshot(self, name: str) -> dict[str, Any]:
        """``POST /collections/{name}/snapshots?wait=true``: a snapshot file on the server
        (name, creation_time, size, checksum = its sha256). It changes no data, but writes a
        file, so plan mode describes it instead."""
        result = self._call(
            "POST",
            f"/collections/{_name(name)}/snapshots",
            "create snapshot",
            _asset(name),
            params={"wait": "true"},
            changes=True,
        )
        return result if isinstance(result, dict) else {}

    def recover_snapshot(self, collection: str, snapshot: str, source_collection: str, checksum: str | None) -> None:
        """Overwrite ``collection``'s points and config with a snapshot of ``source_collection``
        kept on this server. Qdrant downloads the snapshot from its own URL (with the key), and
        refuses it unless its sha256 is ``checksum``."""
        location = f"{self.base_url}/collections/{_name(source_collection)}/snapshots/{_snapshot(snapshot)}"
        body: dict[str, Any] = {"location": location, "priority": "snapshot", "api_key": self._api_key}
        if checksum:
            body["checksum"] = checksum
        self._call(
            "PUT",
            f"/collections/{_name(collection)}/snapshots/recover",
            "recover snapshot",
            f"{_asset(collection)} from snapshot {snapshot}",
            json_body=body,
            params={"wait": "true"},
        )

    def change_aliases(self, actions: list[dict[str, Any]], operation: str, alias: str) -> None:
        """Apply alias actions in one atomic ``POST /collections/aliases``."""
        for action in actions:
            for fields in action.values():
                for value in fields.values():
                    _name(value)
        self._call("POST", "/collections/aliases", operation, f"alias {alias}", json_body={"actions": actions})

    def delete_points(self, name: str, ids: list[PointId]) -> None:
        """``POST /collections/{name}/points/delete?wait=true``; ids that are not there are no error."""
        self._call(
            "POST",
            f"/collections/{_name(name)}/points/delete",
            "delete points",
            _asset(name),
            json_body={"points": [_point_id(i) for i in ids]},
            params={"wait": "true"},
        )


def _asset(name: str) -> str:
    return f"collection {name}"


def _name(value: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(NAME_PATTERN, value):
        raise ValueError("not a Qdrant collection or alias name (letters, digits, _ . -, at most 255)")
    return quote(value, safe="")


def _snapshot(value: str) -> str:
    if not re.fullmatch(SNAPSHOT_PATTERN, value):
        raise ValueError("not a Qdrant snapshot name (<name>.snapshot)")
    return quote(value, safe="")


def _point_id(value: PointId) -> PointId:
    if isinstance(value, bool) or not (
        (isinstance(value, int) and value >= 0) or (isinstance(value, str) and re.fullmatch(UUID_PATTERN, value))
    ):
        raise ValueError("a Qdrant point id is an unsigned integer or a UUID")
    return value


SYSTEM = System(
    name="qdrant",
    title=TITLE,
    settings=QdrantSettings,
    required=("url", "api_key"),
    build=lambda s, o: QdrantApi(str(s.url), secret(s.api_key), timeout=o.timeout, plan=o.plan, **o.retry),
    stand_in=StandIn.fake,
    example_change=lambda c: c.change_aliases(
        [{"delete_alias": {"alias_name": "conformance"}}], "remove alias", "conformance"
    ),
)
