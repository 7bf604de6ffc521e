"""The aisoar agent control plane (docs/agent-control-plane.md): the generic HTTP contract an
agent runtime or MCP gateway implements to be controllable by aisoar.

One method per operation of the contract. Every change sends ``reason`` and ``incident_id``
(the runtime keeps them in its audit log) and is idempotent at the runtime, so a retried or
repeated call is harmless. Path segments are percent-quoted (a CIDR's ``/`` included); the
callers validate them against strict patterns first, because they come from alert data.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr

from connectors.system import StandIn, System, SystemSettings, secret
from connectors.transport import HttpApi

TITLE = "Agent control plane"


class AgentSettings(SystemSettings):
    url: str | None = Field(None, description="base URL of the agent control-plane API")
    token: SecretStr | None = None
SubjectKind = Literal["user", "ip"]
GuardrailMode = Literal["standard", "strict", "lockdown"]
PAGE = 500
MAX_ITEMS = 20_000
MAX_PAGES = 1_000  # a runtime that keeps answering with a next cursor cannot page forever


def _seg(value: str) -> str:
    """One URL path segment, quoted; never empty, ``.`` or ``..`` (which would change the path)."""
    if not value or value in {".", ".."} or len(value) > 256:
        raise ValueError(f"not a valid path segment: {value[:40]!r}")
    return quote(value, safe="")


def agent_asset(agent: str) -> str:
    return f"agent:{agent}"


def subject_asset(kind: str, value: str) -> str:
    return f"{kind}:{value}"


class AgentControlPlane:
    def __init__(self, base_url: str, token: str, timeout: float = 10.0, **retry: Any) -> None:
        self._api = HttpApi(TITLE, base_url, {"Authorization": f"Bearer {token}"}, timeout=timeout, **retry)
        self._api.identify = self.check

    def close(self) -> None:
        self._api.close()

    def _json(self, method: str, path: str, operation: str, asset: str, **kwargs: Any) -> dict[str, Any]:
        body = self._api.request(method, path, operation, asset, **kwargs).json()
        return body if isinstance(body, dict) else {}

    def _pages(
        self, path: str, operation: str, asset: str, key: str, params: dict[str, str], limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        complete = True
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            query = dict(params, limit=str(PAGE))
            if cursor:
                query["cursor"] = cursor
            body = self._json("GET", path, operation, asset, params=query)
            rows = body.get(key)
            page = [r for r in (rows if isinstance(rows, list) else []) if isinstance(r, dict)]
            items.extend(page)
            next_cursor = body.get("next_cursor")
            if not isinstance(next_cursor, str) or not next_cursor:
                break
            # an empty page or a cursor seen before would page forever: stop, incomplete
            if len(items) >= limit or not page or next_cursor in seen:
                complete = False
                break
            seen.add(next_cursor)
            cursor = next_cursor
        else:
            complete = False
        return items[:limit], complete and len(items) <= limit

    def check(self) -> str:
        """One cheap authenticated read: the list of agents."""
        agents = self._json("GET", "/v1/agents", "list agents", "the agent list").get("agents")
        count = len(agents) if isinstance(agents, list) else "?"
        return f"agent control plane reachable, token accepted ({count} agents)"

    # tools ---------------------------------------------------------------------------
    def tools(self, agent: str) -> list[dict[str, Any]]:
        body = self._json("GET", f"/v1/agents/{_seg(agent)}/tools", "list tools", agent_asset(agent))
        tools = body.get("tools")
        return [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []

    def set_tool(self, agent: str, tool: str, enabled: bool, *, reason: str, incident_id: str) -> dict[str, Any]:
        verb = "enable" if enabled else "disable"
        return self._json(
            "POST",
            f"/v1/agents/{_seg(agent)}/tools/{_seg(tool)}/{verb}",
            f"{verb} tool",
            f"{agent_asset(agent)}/tool:{tool}",
            json={"reason": reason, "incident_id": incident_id},
        )

    # instances -----------------------------------------------------------------------
    def instances(self, agent: str) -> list[dict[str, Any]]:
        body = self._json("GET", f"/v1/agents/{_seg(agent)}/instances", "list instances", agent_asset(agent))
        rows = body.get("instances")
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def instance(self, agent: str, instance: str) -> dict[str, Any]:
        return self._json(
            "GET",
            f"/v1/agents/{_seg(agent)}/instances/{_seg(instance)}",
            "read instance",
            f"{agent_asset(agent)}/instance:{instance}",
        )

    def set_instance(self, agent: str, instance: str, online: bool, *, reason: str, incident_id: str) -> dict[str, Any]:
        verb = "online" if online else "offline"
        return self._json(
            "POST",
            f"/v1/agents/{_seg(agent)}/instances/{_seg(instance)}/{verb}",
            "bring instance online" if online else "take instance offline",
            f"{agent_asset(agent)}/instance:{instance}",
            json={"reason": reason, "incident_id": incident_id},
        )

    # memory --------------------------------------------------------------------------
    def memory(self, agent: str, limit: int = MAX_ITEMS) -> tuple[list[dict[str, Any]], bool]:
        """The agent's memory export, all pages up to ``limit`` items; and whether it is complete."""
        path = f"/v1/agents/{_seg(agent)}/memory"
        items, complete = self._pages(path, "export memory", agent_asset(agent), "items", {}, limit)
        return items, complete

    def purge_memory(self, agent: str, ids: list[str] | None, *, reason: str, incident_id: str) -> dict[str, Any]:
        """Delete the memory items ``ids`` (None: every item)."""
        selection: dict[str, Any] = {"all": True} if ids is None else {"ids": list(ids)}
        return self._json(
            "POST",
            f"/v1/agents/{_seg(agent)}/memory/purge",
            "purge memory",
            agent_asset(agent),
            json={**selection, "reason": reason, "incident_id": incident_id},
        )

    def reset_memory(self, agent: str, baseline: str, *, reason: str, incident_id: str) -> dict[str, Any]:
        return self._json(
            "POST",
            f"/v1/agents/{_seg(agent)}/memory/reset",
            "reset memory",
            agent_asset(agent),
            json={"baseline": baseline, "reason": reason, "incident_id": incident_id},
        )

    # sessions ------------------------------------------------------------------------
    def session(self, session: str) -> dict[str, Any] | None:
        response = self._api.request(
            "GET", f"/v1/sessions/{_seg(session)}", "read session", f"session:{session}", ok=(200, 404)
        )
        if response.status_code == 404:
            return None
        body = response.json()
        return body if isinstance(body, dict) else {}

    def set_session(self, session: str, quarantined: bool, *, reason: str, incident_id: str) -> dict[str, Any]:
        verb = "quarantine" if quarantined else "release"
        return self._json(
            "POST",
            f"/v1/sessions/{_seg(session)}/{verb}",
            f"{verb} session",
            f"session:{session}",
            json={"reason": reason, "incident_id": incident_id},
        )

    # behaviour -----------------------------------------------------------------------
    def config(self, agent: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/agents/{_seg(agent)}/config", "read config", agent_asset(agent))

    def patch_config(
        self,
        agent: str,
        *,
        temperature: float | None,
        guardrail_mode: GuardrailMode | None,
        reason: str,
        incident_id: str,
    ) -> dict[str, Any]:
        """Set the given fields; the answer has ``previous`` and ``current`` values."""
        body: dict[str, Any] = {"reason": reason, "incident_id": incident_id}
        if temperature is not None:
            body["temperature"] = temperature
        if guardrail_mode is not None:
            body["guardrail_mode"] = guardrail_mode
        return self._json("PATCH", f"/v1/agents/{_seg(agent)}/config", "set config", agent_asset(agent), json=body)

    # subjects ------------------------------------------------------------------------
    def block(self, kind: SubjectKind, value: str) -> dict[str, Any] | None:
        """The block on the user or IP (network), or None when there is none."""
        response = self._api.request(
            "GET",
            f"/v1/blocks/{_seg(kind)}/{_seg(value)}",
            "read block",
            subject_asset(kind, value),
            ok=(200, 404),
        )
        if response.status_code == 404:
            return None
        body = response.json()
        return body if isinstance(body, dict) else {}

    def blocks(self) -> list[dict[str, Any]]:
        rows = self._json("GET", "/v1/blocks", "list blocks", "the block list").get("blocks")
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def add_block(
        self, kind: SubjectKind, value: str, expires_at: str | None, *, reason: str, incident_id: str
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind, "value": value, "reason": reason, "incident_id": incident_id}
        if expires_at is not None:
            body["expires_at"] = expires_at
        return self._json("POST", "/v1/blocks", f"block {kind}", subject_asset(kind, value), ok=(200, 201), json=body)

    def remove_block(self, kind: SubjectKind, value: str, *, reason: str, incident_id: str) -> dict[str, Any]:
        return self._json(
            "DELETE",
            f"/v1/blocks/{_seg(kind)}/{_seg(value)}",
            f"unblock {kind}",
            subject_asset(kind, value),
            params={"reason": reason, "incident_id": incident_id},
        )

    def rate_limit(self, kind: SubjectKind, value: str) -> dict[str, Any] | None:
        response = self._api.request(
            "GET",
            f"/v1/rate-limits/{_seg(kind)}/{_seg(value)}",
            "read rate limit",
            subject_asset(kind, value),
            ok=(200, 404),
        )
        if response.status_code == 404:
            return None
        body = response.json()
        return body if isinstance(body, dict) else {}

    def set_rate_limit(
        self,
        kind: SubjectKind,
        value: str,
        requests_per_minute: int,
        expires_at: str | None,
        *,
        reason: str,
        incident_id: str,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "requests_per_minute": requests_per_minute,
            "reason": reason,
            "incident_id": incident_id,
        }
        if expires_at is not None:
            body["expires_at"] = expires_at
        return self._json(
            "PUT",
            f"/v1/rate-limits/{_seg(kind)}/{_seg(value)}",
            "set rate limit",
            subject_asset(kind, value),
            json=body,
        )

    def clear_rate_limit(self, kind: SubjectKind, value: str, *, reason: str, incident_id: str) -> dict[str, Any]:
        return self._json(
            "DELETE",
            f"/v1/rate-limits/{_seg(kind)}/{_seg(value)}",
            "clear rate limit",
            subject_asset(kind, value),
            params={"reason": reason, "incident_id": incident_id},
        )

    # evidence ------------------------------------------------------------------------
    def tool_calls(
        self, agent: str, since: str | None = None, limit: int = MAX_ITEMS
    ) -> tuple[list[dict[str, Any]], bool]:
        """The agent's tool-call log (oldest first) since ``since`` (ISO 8601), up to ``limit``
        calls; and whether it is complete. Arguments are attacker-influenced data."""
        params = {"since": since} if since else {}
        path = f"/v1/agents/{_seg(agent)}/tool-calls"
        calls, complete = self._pages(path, "read tool-call log", agent_asset(agent), "calls", params, limit)
        return calls, complete

    def audit(self, since: str | None = None, limit: int = MAX_ITEMS) -> tuple[list[dict[str, Any]], bool]:
        params = {"since": since} if since else {}
        entries, complete = self._pages("/v1/audit", "read audit log", "the audit log", "entries", params, limit)
        return entries, complete


SYSTEM = System(
    name="agent",
    title=TITLE,
    settings=AgentSettings,
    required=("url", "token"),
    build=lambda s, o: AgentControlPlane(str(s.url), secret(s.token), timeout=o.timeout, plan=o.plan, **o.retry),
    stand_in=StandIn.fake,
    example_change=lambda c: c.set_tool("conformance-agent", "shell", False, reason="conformance", incident_id="INC-0"),
    renamed={"control_url": "url", "control_token": "token"},
)
