"""MLflow model registry (REST API 2.0): read a registered model, its aliases and versions;
pin an alias (``production``) to a known-good version and put it back; digest the files of a
version whose artifacts the tracking server serves (``mlflow-artifacts:/`` URIs).

Observed on MLflow 3.x: reading an alias the model does not have answers 400
``INVALID_PARAMETER_VALUE`` ("Registered model alias X not found"), a model that does not exist
404 ``RESOURCE_DOES_NOT_EXIST``; deleting an alias that is not set answers 200. Names, aliases
and versions travel in query strings and JSON bodies; artifact paths, which come from the
registry (and so from whoever tampered with the model), are checked segment by segment and
quoted before they go into a URL path.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import Field, SecretStr

from connectors.errors import ConnectorError
from connectors.system import StandIn, System, SystemSettings, optional_secret
from connectors.transport import HttpApi

TITLE = "MLflow"


class MlflowSettings(SystemSettings):
    url: str | None = None
    token: SecretStr | None = Field(None, description="when the server wants one")
    signing_public_key: Path | None = Field(
        None, description="PEM public key (elliptic curve) the model publisher signs with (OpenSSF model signing)"
    )
    signature_file: str = Field("model.sig", description="the signature's name among a version's files")
API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,255}$"
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$"
RESERVED_ALIAS = re.compile(r"^(latest|v[0-9]+)$", re.IGNORECASE)  # MLflow refuses these names
VERSION_PATTERN = r"^[1-9][0-9]{0,9}$"
LOGGED_MODEL_PATTERN = r"^m-[0-9a-f]{32}$"
_SEGMENT = re.compile(r"^[^/\\\x00-\x1f]{1,255}$")

MAX_ARTIFACT_FILES = 500
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
MAX_LISTINGS = 200  # directories listed per version


class UnsafeArtifactPath(ValueError):
    """An artifact path from the registry that aisoar will not put into a URL."""


def artifact_path(path: str) -> str:
    """``path`` checked (no empty, ``.`` or ``..`` segments, no control characters) and with
    each segment percent-quoted for a URL path."""
    segments = path.strip("/").split("/")
    for segment in segments:
        if segment in {"", ".", ".."} or not _SEGMENT.match(segment):
            raise UnsafeArtifactPath(f"unsafe artifact path segment {segment[:40]!r}")
    return "/".join(quote(segment, safe="") for segment in segments)


def canonical_sha256(document: Any) -> str:
    """sha256 of the canonical JSON of ``document`` (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def version_digest(record: dict[str, Any]) -> str:
    """The digest of a version record, without ``aliases`` (they belong to the model and
    change when an alias is pinned; the version itself does not)."""
    return canonical_sha256({k: v for k, v in record.items() if k != "aliases"})


class MlflowRegistry:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 10.0,
        max_files: int = MAX_ARTIFACT_FILES,
        max_bytes: int = MAX_ARTIFACT_BYTES,
        **retry: Any,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._api = HttpApi(TITLE, base_url, headers, timeout=timeout, **retry)
        self._api.identify = self.check
        self.max_files = max_files
        self.max_bytes = max_bytes

    def close(self) -> None:
        self._api.close()

    # -- reads -------------------------------------------------------------------------
    def check(self) -> str:
        """One cheap authenticated read: search one registered model."""
        response = self._api.request(
            "GET",
            f"{API}/registered-models/search",
            "search registered models",
            "the registry",
            params={"max_results": "1"},
        )
        found = len(_object(response).get("registered_models") or [])
        return f"MLflow registry reachable, credentials accepted ({'models' if found else 'no models'} listed)"

    def get_model(self, name: str) -> dict[str, Any] | None:
        """The registered model (description, tags, aliases, latest versions), or None."""
        response = self._api.request(
            "GET", f"{API}/registered-models/get", "read model", f"model {name}", ok=(200, 404), params={"name": name}
        )
        if response.status_code == 404:
            return None
        model = _object(response).get("registered_model")
        return model if isinstance(model, dict) else {}

    def get_version(self, name: str, version: str) -> dict[str, Any] | None:
        """The version's record (source, run_id, status, tags, creation time, user), or None."""
        response = self._api.request(
            "GET",
            f"{API}/model-versions/get",
            "read model version",
            f"{name} v{version}",
            ok=(200, 404),
            params={"name": name, "version": version},
        )
        if response.status_code == 404:
            return None
        record = _object(response).get("model_version")
        return record if isinstance(record, dict) else {}

    def get_alias(self, name: str, alias: str) -> str | None:
        """The version ``alias`` points to, or None when it is not set (or the model is gone)."""
        asset = f"{name}@{alias}"
        response = self._api.request(
            "GET",
            f"{API}/registered-models/alias",
            "read alias",
            asset,
            ok=(200, 400, 404),
            params={"name": name, "alias": alias},
        )
        body = _object(response)
        if response.status_code == 200:
            record = body.get("model_version")
            return str(record["version"]) if isinstance(record, dict) and record.get("version") else None
        message = str(body.get("message", ""))
        if response.status_code == 404 or ("alias" in message and "not found" in message):
            return None
        raise ConnectorError(TITLE, "read alias", asset, response.status_code, message[:300])

    # -- changes -------------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: str, operation: str = "set alias") -> None:
        self._api.request(
            "POST",
            f"{API}/registered-models/alias",
            operation,
            f"{name}@{alias}",
            json={"name": name, "alias": alias, "version": version},
        )

    def delete_alias(self, name: str, alias: str, operation: str = "delete alias") -> None:
        """Delete the alias; deleting an alias that is not set is harmless (MLflow answers 200)."""
        self._api.request(
            "DELETE",
            f"{API}/registered-models/alias",
            operation,
            f"{name}@{alias}",
            json={"name": name, "alias": alias},
        )

    def pin(self, name: str, alias: str, version: str) -> dict[str, Any]:
        """Point ``alias`` at ``version``, which must exist and be READY; returns the version it
        pointed to before (``previous_version``, None when unset) and whether anything changed.
        Pinning the version the alias already points to changes nothing."""
        asset = f"{name}@{alias}"
        record = self.get_version(name, version)
        if record is None:
            raise ConnectorError(
                TITLE, "pin alias", asset, 404, f"model {name} has no version {version}: pin a version that exists"
            )
        state = record.get("status")
        if state not in (None, "READY"):
            raise ConnectorError(
                TITLE, "pin alias", asset, "refused", f"version {version} is {state}, not READY: pin a ready version"
            )
        current = self.get_alias(name, alias)
        if current == version:
            return {"previous_version": current, "version": version, "changed": False}
        self.set_alias(name, alias, version, "pin alias")
        return {"previous_version": current, "version": version, "changed": True}

    def unpin(
        self, name: str, alias: str, previous_version: str | None, pinned_version: str | None = None
    ) -> dict[str, Any]:
        """Put ``alias`` back on ``previous_version`` (None: delete the alias, as it was unset).

        With ``pinned_version``, an alias that now points to neither version (someone re-pointed
        it since) is left as it is: ``changed`` False and ``left_as_is`` True.
        """
        current = self.get_alias(name, alias)
        result: dict[str, Any] = {"current_version": current, "restored_version": previous_version}
        if current == previous_version:
            return {**result, "changed": False, "left_as_is": False}
        if pinned_version is not None and current != pinned_version:
            return {**result, "changed": False, "left_as_is": True}
        if previous_version is None:
            self.delete_alias(name, alias, "unpin alias")
        else:
            self.set_alias(name, alias, previous_version, "unpin alias")
        return {**result, "changed": True, "left_as_is": False}

    # -- artifacts -------------------------------------------------------------------------
    def artifact_root(self, record: dict[str, Any]) -> tuple[str | None, str]:
        """Where the tracking server serves the version's files (a path under
        ``mlflow-artifacts``), or None with the reason it does not."""
        source = str(record.get("source") or "")
        model_id = str(record.get("model_id") or "")
        if source.startswith("models:/") and re.match(LOGGED_MODEL_PATTERN, model_id):
            response = self._api.request(
                "GET",
                f"{API}/logged-models/{quote(model_id, safe='')}",
                "read logged model",
                f"logged model {model_id}",
                ok=(200, 404),
            )
            model = _object(response).get("model")
            info = model.get("info") if isinstance(model, dict) else None
            source = str(info.get("artifact_uri") or source) if isinstance(info, dict) else source
        parts = urlsplit(source)
        if parts.scheme != "mlflow-artifacts":
            scheme = parts.scheme or "a local path"
            return None, f"artifacts are at {scheme}, not served by the tracking server: files not digested"
        try:
            artifact_path(parts.path)
        except UnsafeArtifactPath as exc:
            return None, f"artifact source refused: {exc}"
        return parts.path.strip("/"), source

    def artifact_digests(self, root: str, into: Path | None = None) -> dict[str, Any]:
        """sha256 of every file under ``root`` (breadth first), bounded by ``max_files``,
        ``max_bytes`` and ``MAX_LISTINGS``; ``truncated`` says why the list is incomplete.
        ``into``: also write each file there, under its path below ``root``."""
        files: list[dict[str, Any]] = []
        refused: list[str] = []
        reasons: list[str] = []
        total = 0
        listings = 0
        pending: deque[str] = deque([root])
        while pending:
            directory = pending.popleft()
            if listings >= MAX_LISTINGS:
                reasons.append(f"stopped after listing {MAX_LISTINGS} directories")
                break
            listings += 1
            for entry in self._list(directory):
                name = str(entry.get("path") or "")
                path = f"{directory}/{name}"
                try:
                    artifact_path(path)
                except UnsafeArtifactPath as exc:
                    refused.append(f"{name[:80]!r}: {exc}")
                    continue
                if entry.get("is_dir"):
                    pending.append(path)
                    continue
                relative = path[len(root) + 1 :]
                size = _size(entry.get("file_size"))
                if len(files) >= self.max_files:
                    reasons.append(f"more than {self.max_files} files")
                    pending.clear()
                    break
                if total + size > self.max_bytes:
                    reasons.append(f"{relative} ({size} bytes) would pass the {self.max_bytes}-byte limit")
                    files.append({"path": relative, "size": size, "sha256": None})
                    continue
                content = self._download(path)
                total += len(content)
                if into is not None:
                    target = (into / relative).resolve()
                    if not target.is_relative_to(into.resolve()):  # artifact_path refused ".." already
                        raise UnsafeArtifactPath(f"{relative[:80]!r} leaves the download folder")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(content)
                files.append({"path": relative, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()})
        files.sort(key=lambda f: str(f["path"]))
        return {
            "root": root,
            "files": files,
            "files_digested": sum(1 for f in files if f["sha256"]),
            "bytes_digested": total,
            "refused_paths": refused,
            "truncated": bool(reasons),
            "truncated_reasons": reasons,
            "limits": {"max_files": self.max_files, "max_bytes": self.max_bytes, "max_listings": MAX_LISTINGS},
        }

    def _list(self, path: str) -> list[dict[str, Any]]:
        response = self._api.request(
            "GET", ARTIFACTS, "list artifacts", f"artifacts {path[:120]}", params={"path": path}
        )
        entries = _object(response).get("files") or []
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []

    def _download(self, path: str) -> bytes:
        response = self._api.request("GET", f"{ARTIFACTS}/{artifact_path(path)}", "download artifact", path[:120])
        return response.content


def _size(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


SYSTEM = System(
    name="mlflow",
    title=TITLE,
    settings=MlflowSettings,
    required=("url",),
    build=lambda s, o: MlflowRegistry(
        str(s.url), optional_secret(s.token), timeout=o.timeout, plan=o.plan, **o.retry
    ),
    stand_in=StandIn.server,
    example_change=lambda c: c.set_alias("conformance-model", "production", "1"),
)
