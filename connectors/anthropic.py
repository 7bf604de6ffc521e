"""Anthropic Admin API: organization API keys, read and set active / inactive.

Every request carries the Admin API key (``x-api-key: sk-ant-admin...``) and
``anthropic-version: 2023-06-01``. An inactive key is refused by the Messages API and can
be activated again; an archived key is refused for good and cannot be changed any more,
so aisoar never archives (that would be a destructive step with no inverse).
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from pydantic import SecretStr

from connectors.system import StandIn, System, SystemSettings, secret
from connectors.transport import HttpApi

TITLE = "Anthropic Admin API"


class AnthropicSettings(SystemSettings):
    url: str = "https://api.anthropic.com"
    admin_key: SecretStr | None = None
API_VERSION = "2023-06-01"
KeyStatus = Literal["active", "inactive"]


class AnthropicAdmin:
    def __init__(self, base_url: str, admin_key: str, timeout: float = 10.0, **retry: Any) -> None:
        headers = {"x-api-key": admin_key, "anthropic-version": API_VERSION}
        self._api = HttpApi(TITLE, base_url, headers, timeout=timeout, **retry)
        self._api.identify = self.check

    def close(self) -> None:
        self._api.close()

    def check(self) -> str:
        """One cheap authenticated read: list one API key of the organization."""
        response = self._api.request(
            "GET", "/v1/organizations/api_keys", "list API keys", "the organization", params={"limit": "1"}
        )
        body = response.json()
        listed = len(body.get("data") or []) if isinstance(body, dict) else 0
        return f"Anthropic Admin API reachable, admin key accepted ({'keys visible' if listed else 'no keys'})"

    @staticmethod
    def _path(key_id: str) -> str:
        return f"/v1/organizations/api_keys/{quote(key_id, safe='')}"

    def get_key(self, key_id: str) -> dict[str, Any] | None:
        """The key's record (name, workspace, creator, hint, status), or None when there is no such key."""
        response = self._api.request("GET", self._path(key_id), "read API key", key_id, ok=(200, 404))
        if response.status_code == 404:
            return None
        body = response.json()
        return body if isinstance(body, dict) else {}

    def set_status(self, key_id: str, status: KeyStatus) -> dict[str, Any]:
        """Set the key active or inactive; setting the status it already has is harmless."""
        operation = "activate API key" if status == "active" else "deactivate API key"
        response = self._api.request("POST", self._path(key_id), operation, key_id, json={"status": status})
        body = response.json()
        return body if isinstance(body, dict) else {}


SYSTEM = System(
    name="anthropic",
    title=TITLE,
    settings=AnthropicSettings,
    required=("admin_key",),
    build=lambda s, o: AnthropicAdmin(s.url, secret(s.admin_key), timeout=o.timeout, plan=o.plan, **o.retry),
    stand_in=StandIn.fake,
    example_change=lambda c: c.set_status("apikey_01Conformance", "inactive"),
    renamed={"admin_url": "url"},
)
