"""OpenAI Admin API: project API keys. Project keys cannot be disabled, only deleted."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from connectors.http import HttpApi

SYSTEM = "OpenAI Admin API"


class OpenAIAdmin:
    def __init__(self, base_url: str, admin_key: str, timeout: float = 10.0, **retry: Any) -> None:
        self._api = HttpApi(SYSTEM, base_url, {"Authorization": f"Bearer {admin_key}"}, timeout=timeout, **retry)

    def close(self) -> None:
        self._api.close()

    @staticmethod
    def _path(project_id: str, key_id: str | None = None) -> str:
        path = f"/organization/projects/{quote(project_id, safe='')}/api_keys"
        return f"{path}/{quote(key_id, safe='')}" if key_id else path

    def get_project_key(self, project_id: str, key_id: str) -> dict[str, Any] | None:
        response = self._api.request(
            "GET", self._path(project_id, key_id), "read project key", f"{project_id}/{key_id}", ok=(200, 404)
        )
        if response.status_code == 404:
            return None
        body = response.json()
        return body if isinstance(body, dict) else {}

    def delete_project_key(self, project_id: str, key_id: str) -> bool:
        """Delete the key; returns False when it was already gone (deleting twice is harmless)."""
        response = self._api.request(
            "DELETE", self._path(project_id, key_id), "delete project key", f"{project_id}/{key_id}", ok=(200, 404)
        )
        if response.status_code == 404:
            return False
        body = response.json()
        return bool(isinstance(body, dict) and body.get("deleted"))
