"""LiteLLM proxy key management API (``/key/*``) and its request logs (``/spend/logs``),
addressed by the key's hash.

LiteLLM identifies a virtual key by ``sha256(key)``; aisoar never holds the key itself,
only that hash (the same value as the key's evidence fingerprint).
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from connectors.system import StandIn, System, SystemSettings, secret
from connectors.transport import HttpApi

TITLE = "LiteLLM gateway"


class LiteLLMSettings(SystemSettings):
    url: str | None = None
    master_key: SecretStr | None = None
MAX_LOG_ROWS = 1000


class LiteLLMGateway:
    def __init__(self, base_url: str, master_key: str, timeout: float = 10.0, **retry: Any) -> None:
        self._api = HttpApi(TITLE, base_url, {"Authorization": f"Bearer {master_key}"}, timeout=timeout, **retry)
        self._api.identify = self.check

    def close(self) -> None:
        self._api.close()

    def check(self) -> str:
        """One cheap authenticated read: list one key with the master key."""
        response = self._api.request("GET", "/key/list", "list keys", "the key list", params={"size": "1"})
        body = response.json()
        total = body.get("total_count") if isinstance(body, dict) else None
        return f"LiteLLM gateway reachable, master key accepted ({total if total is not None else '?'} keys)"

    def key_info(self, key_hash: str) -> dict[str, Any] | None:
        """The key's row (spend, blocked, models, limits, aliases ...), or None when the gateway has no such key."""
        response = self._api.request(
            "GET", "/key/info", "read key info", _asset(key_hash), ok=(200, 404), params={"key": key_hash}
        )
        if response.status_code == 404:
            return None
        body = response.json()
        info = body.get("info") if isinstance(body, dict) else None
        return info if isinstance(info, dict) else {}

    def block_key(self, key_hash: str) -> dict[str, Any]:
        response = self._api.request("POST", "/key/block", "block key", _asset(key_hash), json={"key": key_hash})
        body = response.json()
        return body if isinstance(body, dict) else {}

    def unblock_key(self, key_hash: str) -> dict[str, Any]:
        response = self._api.request("POST", "/key/unblock", "unblock key", _asset(key_hash), json={"key": key_hash})
        body = response.json()
        return body if isinstance(body, dict) else {}

    def update_key(self, key_hash: str, operation: str, fields: dict[str, Any]) -> dict[str, Any]:
        """``POST /key/update``: set exactly ``fields`` (an explicit None clears a field); the
        other fields of the key are left as they are. Setting the same values twice is harmless."""
        response = self._api.request(
            "POST", "/key/update", operation, _asset(key_hash), json={"key": key_hash, **fields}
        )
        body = response.json()
        return body if isinstance(body, dict) else {}

    def set_limits(self, key_hash: str, limits: dict[str, int | float | None]) -> dict[str, Any]:
        """Set some of ``rpm_limit``, ``tpm_limit``, ``max_budget`` (None: no limit)."""
        unknown = set(limits) - {"rpm_limit", "tpm_limit", "max_budget"}
        if unknown:
            raise ValueError(f"not a key limit: {', '.join(sorted(unknown))}")
        return self.update_key(key_hash, "set key limits", dict(limits))

    def set_routes(self, key_hash: str, aliases: dict[str, str], models: list[str] | None = None) -> dict[str, Any]:
        """Set the key's model aliases (requested name -> deployment) and, if given, its allowed models."""
        fields: dict[str, Any] = {"aliases": dict(aliases)}
        if models is not None:
            fields["models"] = list(models)
        return self.update_key(key_hash, "set model routes", fields)

    def set_object_permission(self, key_hash: str, permission: dict[str, Any]) -> dict[str, Any]:
        """The key's object permission (MCP servers and tools, blocked tools, agents ...): send
        every field it should have, so the result is the same whether the proxy merges or replaces."""
        return self.update_key(key_hash, "set object permission", {"object_permission": dict(permission)})

    def set_guardrails(self, key_hash: str, guardrails: list[str]) -> dict[str, Any]:
        """The guardrails the gateway runs for the key (names configured on the proxy)."""
        return self.update_key(key_hash, "set key guardrails", {"guardrails": list(guardrails)})

    def request_logs(self, key_hash: str, limit: int = MAX_LOG_ROWS) -> tuple[list[dict[str, Any]], int]:
        """The key's request log rows (``GET /spend/logs?api_key=<hash>``), newest ``limit``
        first-to-last by start time, and how many rows the gateway returned in all.

        Rows may hold prompts and responses (when the proxy stores them): hostile text,
        to be kept as data and never rendered or evaluated.
        """
        response = self._api.request(
            "GET", "/spend/logs", "read request logs", _asset(key_hash), params={"api_key": key_hash}
        )
        body = response.json()
        rows = [row for row in body if isinstance(row, dict)] if isinstance(body, list) else []
        rows.sort(key=lambda row: str(row.get("startTime") or ""))
        return rows[-limit:] if limit > 0 else [], len(rows)


def _asset(key_hash: str) -> str:
    return f"key sha256:{key_hash[:12]}"


SYSTEM = System(
    name="litellm",
    title=TITLE,
    settings=LiteLLMSettings,
    required=("url", "master_key"),
    build=lambda s, o: LiteLLMGateway(str(s.url), secret(s.master_key), timeout=o.timeout, plan=o.plan, **o.retry),
    stand_in=StandIn.fake,
    example_change=lambda c: c.block_key("0" * 64),
)
