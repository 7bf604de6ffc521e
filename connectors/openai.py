"""OpenAI Admin API: project API keys and project service accounts.

Project keys cannot be disabled, only deleted. Deleting a service account also deletes
every API key it owns.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import Field, SecretStr

from connectors.system import StandIn, System, SystemSettings, secret
from connectors.transport import HttpApi

TITLE = "OpenAI Admin API"


class OpenAISettings(SystemSettings):
    url: str | None = Field(None, description="the Admin API's base URL, including /v1")
    admin_key: SecretStr | None = None
MAX_PAGES = 50  # 100 items a page: 5000 items at most, so a hostile or broken cursor cannot loop forever


class OpenAIAdmin:
    def __init__(self, base_url: str, admin_key: str, timeout: float = 10.0, **retry: Any) -> None:
        self._api = HttpApi(TITLE, base_url, {"Authorization": f"Bearer {admin_key}"}, timeout=timeout, **retry)
        self._api.identify = self.check

    def close(self) -> None:
        self._api.close()

    def check(self) -> str:
        """One cheap authenticated read: list one project with the admin key."""
        response = self._api.request(
            "GET", "/organization/projects", "list projects", "the organization", params={"limit": "1"}
        )
        body = response.json()
        listed = len(body.get("data") or []) if isinstance(body, dict) else 0
        return f"OpenAI Admin API reachable, admin key accepted ({'projects visible' if listed else 'no projects'})"

    @staticmethod
    def _path(project_id: str, key_id: str | None = None) -> str:
        path = f"/organization/projects/{quote(project_id, safe='')}/api_keys"
        return f"{path}/{quote(key_id, safe='')}" if key_id else path

    @staticmethod
    def _account_path(project_id: str, account_id: str | None = None) -> str:
        path = f"/organization/projects/{quote(project_id, safe='')}/service_accounts"
        return f"{path}/{quote(account_id, safe='')}" if account_id else path

    def _get_one(self, path: str, operation: str, asset: str) -> dict[str, Any] | None:
        response = self._api.request("GET", path, operation, asset, ok=(200, 404))
        if response.status_code == 404:
            return None
        body = response.json()
        return body if isinstance(body, dict) else {}

    def _list(self, path: str, operation: str, asset: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        after: str | None = None
        for _ in range(MAX_PAGES):
            params = {"limit": "100"} | ({"after": after} if after else {})
            body = self._api.request("GET", path, operation, asset, params=params).json()
            if not isinstance(body, dict):
                break
            items.extend(item for item in body.get("data") or [] if isinstance(item, dict))
            after = body.get("last_id")
            if not body.get("has_more") or not isinstance(after, str) or not after:
                break
        return items

    def get_project_key(self, project_id: str, key_id: str) -> dict[str, Any] | None:
        return self._get_one(self._path(project_id, key_id), "read project key", f"{project_id}/{key_id}")

    def list_project_keys(self, project_id: str) -> list[dict[str, Any]]:
        return self._list(self._path(project_id), "list project keys", project_id)

    def delete_project_key(self, project_id: str, key_id: str) -> bool:
        """Delete the key; returns False when it was already gone (deleting twice is harmless)."""
        response = self._api.request(
            "DELETE", self._path(project_id, key_id), "delete project key", f"{project_id}/{key_id}", ok=(200, 404)
        )
        if response.status_code == 404:
            return False
        body = response.json()
        return bool(isinstance(body, dict) and body.get("deleted"))

    def get_service_account(self, project_id: str, account_id: str) -> dict[str, Any] | None:
        return self._get_one(
            self._account_path(project_id, account_id), "read service account", f"{project_id}/{account_id}"
        )

    def list_service_accounts(self, project_id: str) -> list[dict[str, Any]]:
        return self._list(self._account_path(project_id), "list service accounts", project_id)

    def service_account_keys(self, project_id: str, account_id: str) -> list[dict[str, Any]]:
        """The project keys owned by the service account (their records show redacted values only)."""
        owned = []
        for key in self.list_project_keys(project_id):
            owner = key.get("owner") if isinstance(key.get("owner"), dict) else {}
            account = owner.get("service_account") if isinstance(owner, dict) else None
            if isinstance(account, dict) and account.get("id") == account_id:
                owned.append(key)
        return owned

    def delete_service_account(self, project_id: str, account_id: str) -> bool:
        """Delete the service account and, with it, its keys; False when it was already gone."""
        response = self._api.request(
            "DELETE",
            self._account_path(project_id, account_id),
            "delete service account",
            f"{project_id}/{account_id}",
            ok=(200, 404),
        )
        if response.status_code == 404:
            return False
        body = response.json()
        return bool(isinstance(body, dict) and body.get("deleted"))


SYSTEM = System(
    name="openai",
    title=TITLE,
    settings=OpenAISettings,
    required=("url", "admin_key"),
    build=lambda s, o: OpenAIAdmin(str(s.url), secret(s.admin_key), timeout=o.timeout, plan=o.plan, **o.retry),
    stand_in=StandIn.fake,
    example_change=lambda c: c.delete_project_key("proj_conformance", "key_conformance"),
    renamed={"admin_url": "url"},
)
