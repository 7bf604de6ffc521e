"""A configured HTTP endpoint for systems aisoar has no connector for yet.

The base URL (scheme, host, port, base path) comes from configuration only. A request
adds a relative path that is checked to stay under that base: no scheme, no host, no
``..``, no encoded slashes or dots, no query or fragment (parameters go in ``params``).
After joining, the URL is parsed again and refused unless scheme, host, port and base
path are still the configured ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httpx

from aisoar.config import Settings
from connectors.errors import ConnectorError, NotConfigured
from connectors.transport import READ_METHODS, HttpApi

SAFE_PATH = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
# ".." / "." segments, also with a ";params" tail ("..;/" is ".." to Tomcat, Spring, Jetty)
FORBIDDEN = re.compile(r"(^|/)\.\.?(;[^/]*)?(/|$)|//|%2e|%2f|%5c|%00", re.IGNORECASE)
MAX_BODY_BYTES = 1_000_000


class UnsafePath(ValueError):
    """A path that could leave the configured base URL."""


def check_path(path: str) -> str:
    """Return ``path`` if it is a safe relative path, else raise ``UnsafePath`` saying why."""
    if "://" in path or path.startswith("//"):
        raise UnsafePath("the path must be relative: the host comes from configuration only")
    if not SAFE_PATH.fullmatch(path):
        raise UnsafePath("the path may hold only URL path characters (no spaces, '?', '#' or backslashes)")
    if FORBIDDEN.search(path):
        raise UnsafePath("the path may not contain '.', '..', '//' segments or encoded '.', '/', '\\' or NUL")
    return path


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # parsed JSON, or text (bounded)
    size: int


class GenericHttp:
    def __init__(
        self,
        name: str,
        base_url: str,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        **retry: Any,
    ) -> None:
        self.name = name
        self.system = f"HTTP endpoint {name}"
        self._base = httpx.URL(base_url.rstrip("/") + "/")
        self._api = HttpApi(self.system, str(self._base), headers or {}, timeout=timeout, **retry)
        # An endpoint may echo the request (headers included) in an answer or an error page:
        # the credential never reaches an error, an output or evidence through it.
        secrets = set()
        for value in (headers or {}).values():
            secrets.add(value)
            secrets.update(part for part in value.split() if len(part) >= 8)
        self._secrets = sorted((s for s in secrets if s), key=len, reverse=True)

    def close(self) -> None:
        self._api.close()

    def url_for(self, path: str) -> str:
        """The absolute URL for ``path``, guaranteed to stay under the configured base."""
        check_path(path)
        url = self._base.join(path.lstrip("/"))
        same_origin = (url.scheme, url.host, url.port) == (self._base.scheme, self._base.host, self._base.port)
        if not same_origin or not url.path.startswith(self._base.path):
            raise UnsafePath(f"the path leaves the configured base URL of {self.name}")
        return str(url)

    def call(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        expect: tuple[int, ...] = (200,),
        changes: bool | None = None,
    ) -> Answer:
        url = self.url_for(path)
        relative = url.removeprefix(str(self._base).rstrip("/"))
        # An arbitrary change may not be safe to repeat: after a timeout or a 5xx it is not
        # sent again (it may have been acted on); only a read is retried on those.
        try:
            response = self._api.request(
                method,
                relative,
                operation,
                f"{self.name}:{relative}",
                ok=expect,
                json=body,
                params=params,
                changes=changes,
                idempotent=method.upper() in READ_METHODS,
            )
        except ConnectorError as exc:
            raise ConnectorError(exc.system, exc.operation, exc.asset, exc.status, self._redact(exc.detail)) from None
        content = response.content[:MAX_BODY_BYTES]
        try:
            parsed: Any = response.json() if len(response.content) <= MAX_BODY_BYTES else None
        except ValueError:
            parsed = None
        if parsed is None:
            parsed = content.decode("utf-8", errors="replace")
        return Answer(status=response.status_code, body=self._redact(parsed), size=len(response.content))

    def _redact(self, value: Any) -> Any:
        """``value`` with the configured credential replaced wherever it appears in text."""
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, "[redacted]")
            return value
        if isinstance(value, list):
            return [self._redact(item) for item in value]
        if isinstance(value, dict):
            return {self._redact(key): self._redact(item) for key, item in value.items()}
        return value

    def check(self) -> str:
        """Reachability: any answer below 500 from the base URL counts."""
        answer = self._api.request("GET", "/", "check reachability", self.name, ok=tuple(range(200, 500)))
        return f"{self.name} answers (HTTP {answer.status_code})"


@lru_cache(maxsize=32)
def _client(name: str, url: str, header: str, value: str | None, timeout: float, plan: bool) -> GenericHttp:
    headers = {header: value} if value else {}
    return GenericHttp(name, url, headers, timeout=timeout, plan=plan)


def endpoint(settings: Settings, name: str) -> GenericHttp:
    config = settings.http_endpoints.get(name)
    if config is None:
        raise NotConfigured(f"HTTP endpoint {name}", [f"AISOAR_HTTP_ENDPOINTS__{name}__URL"])
    value = f"{config.auth_scheme} {config.token.get_secret_value()}".strip() if config.token else None
    return _client(name, config.url, config.auth_header, value, settings.http_timeout_seconds, settings.plan_mode)
