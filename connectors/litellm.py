"""LiteLLM proxy key management API (``/key/*``), addressed by the key's hash.

LiteLLM identifies a virtual key by ``sha256(key)``; aisoar never holds the key itself,
only that hash (the same value as the key's evidence fingerprint).
"""

from __future__ import annotations

from typing import Any

from connectors.http import HttpApi

SYSTEM = "LiteLLM gateway"


class LiteLLMGateway:
    def __init__(self, base_url: str, master_key: str, timeout: float = 10.0, **retry: Any) -> None:
        self._api = HttpApi(SYSTEM, base_url, {"Authorization": f"Bearer {master_key}"}, timeout=timeout, **retry)

    def close(self) -> None:
        self._api.close()

    def key_info(self, key_hash: str) -> dict[str, Any] | None:
        """The key's row (spend, blocked, models, ...), or None when the gateway has no such key."""
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


def _asset(key_hash: str) -> str:
    return f"key sha256:{key_hash[:12]}"
