"""A stand-in for the LiteLLM proxy's key management API, its request logs and its chat endpoint.

Checked against the proxy's own OpenAPI document (``/key/*`` subset of LiteLLM 1.108.7):
admin endpoints need the master key (``Authorization: Bearer`` or ``x-litellm-api-key``);
``/key/block`` and ``/key/unblock`` take ``{"key"}`` (the key or its sha256);
``/key/info?key=`` answers ``{"key", "info"}``; ``/key/update`` sets exactly the fields sent
(``rpm_limit``, ``tpm_limit``, ``max_budget``, ``models``, ``aliases`` ...; an explicit null
clears one) and 404s an unknown key; ``/key/list`` answers a ``KeyListResponseObject`` of
hashes; invalid bodies get FastAPI's 422 shape. Other errors have the proxy's
``ProxyException`` shape ``{"error": {"message", "type", "param", "code"}}`` (401
``auth_error`` without the master key; 404 for a key the proxy does not hold, a deleted
key included: its row is gone from the verification token table).

``GET /spend/logs?api_key=<hash>`` is not in that document: it is modeled on LiteLLM's
documented SpendLogs rows (request_id, call_type, api_key (the key's hash), spend,
total_tokens, prompt_tokens, completion_tokens, startTime, endTime, model, user, metadata,
request_tags, and messages/response when the proxy stores prompts) and answers a list.

``object_permission`` (LiteLLM_ObjectPermissionBase: ``blocked_tools``, ``mcp_servers`` ...) is
kept as the key's own row and returned by ``/key/info``; an update merges the fields sent into it
(null or ``{}``: no change); ``guardrails`` is metadata-backed (merged into ``metadata``). ``POST
/mcp-rest/tools/call`` (modeled on LiteLLM's MCP REST route, not in that document) refuses a tool
in the key's ``blocked_tools`` with 403.

``/chat/completions`` behaves like the proxy in front of a model: a blocked, deleted or
unknown key gets 401; a model outside the key's ``models`` gets 401; a key over its
``max_budget`` gets 400; more requests in a minute than ``rpm_limit`` get 429 with
Retry-After; otherwise the key's ``aliases`` route the requested model and the answer names
the deployment that served it. Every answered request adds a SpendLogs row.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict


def hash_token(key: str) -> str:
    return (
        key
        if len(key) == 64 and all(c in "0123456789abcdef" for c in key)
        else hashlib.sha256(key.encode()).hexdigest()
    )


class BlockKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str


class KeyRequest(BaseModel):
    keys: list[str] | None = None
    key_aliases: list[str] | None = None


class GenerateKeyRequest(BaseModel):
    key_alias: str | None = None
    models: list[str] = []
    metadata: dict[str, Any] = {}
    key: str | None = None
    max_budget: float | None = None


class UpdateKeyRequest(BaseModel):
    """The subset of the proxy's ``UpdateKeyRequest`` the sandbox applies; other documented
    fields are accepted and ignored, like the proxy ignores fields it does not know."""

    key: str | None = None
    key_alias: str | None = None
    models: list[str] | None = None
    aliases: dict[str, Any] | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_budget: float | None = None
    metadata: dict[str, Any] | None = None
    blocked: bool | None = None
    guardrails: list[str] | None = None  # metadata-backed: merged into metadata, null leaves it
    object_permission: dict[str, Any] | None = None  # LiteLLM_ObjectPermissionBase, its own table


UPDATABLE = ("key_alias", "models", "aliases", "rpm_limit", "tpm_limit", "max_budget", "metadata", "blocked")
# LiteLLM_ObjectPermissionBase's fields (the key's object permission row)
OBJECT_PERMISSION_FIELDS = (
    "mcp_servers",
    "mcp_access_groups",
    "mcp_tool_permissions",
    "mcp_toolsets",
    "blocked_tools",
    "vector_stores",
    "agents",
    "agent_access_groups",
    "models",
    "search_tools",
    "mcp_tool_search_enabled",
    "skills",
)


def _chat_error(status: int, message: str, type_: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": type_, "param": None, "code": str(status)}},
        headers=headers,
    )


class ProxyError(Exception):
    """What the proxy raises as ``ProxyException``: answered as ``{"error": {...}}``."""

    def __init__(self, status: int, message: str, type_: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param


class LiteLLMState:
    def __init__(self, master_key: str) -> None:
        self.master_key = master_key
        self.keys: dict[str, dict[str, Any]] = {}
        self.deleted: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.spend_logs: list[dict[str, Any]] = []
        self.recent: dict[str, list[float]] = {}  # key hash -> start times of its requests (rpm window)
        self.lock = threading.Lock()

    def add_key(self, key: str, alias: str | None = None, spend: float = 0.0, models: list[str] | None = None) -> str:
        token = hash_token(key)
        now = datetime.now(UTC).isoformat()
        self.keys[token] = {
            "key_name": f"sk-...{key[-4:]}",
            "key_alias": alias,
            "spend": spend,
            "max_budget": None,
            "models": models or [],
            "aliases": {},
            "metadata": {},
            "blocked": None,
            "expires": None,
            "user_id": None,
            "team_id": None,
            "tpm_limit": None,
            "rpm_limit": None,
            "object_permission_id": None,
            "object_permission": None,
            "budget_duration": None,
            "created_at": now,
            "updated_at": now,
            "last_active": now,
        }
        return token

    def add_spend_log(
        self,
        token: str,
        model: str,
        messages: Any = None,
        response: Any = None,
        spend: float = 0.01,
        user: str = "",
        tags: list[str] | None = None,
        prompt_tokens: int = 12,
        completion_tokens: int = 30,
    ) -> dict[str, Any]:
        """Append a SpendLogs row, as the proxy does after each answered request."""
        now = datetime.now(UTC).isoformat()
        row = {
            "request_id": f"chatcmpl-{uuid.uuid4()}",
            "call_type": "acompletion",
            "api_key": token,
            "spend": spend,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "startTime": now,
            "endTime": now,
            "completionStartTime": now,
            "model": model,
            "model_group": model,
            "api_base": "https://sandbox.invalid/v1",
            "user": user,
            "team_id": None,
            "end_user": "",
            "metadata": {"user_api_key": token, "user_api_key_alias": self.keys.get(token, {}).get("key_alias")},
            "cache_hit": "False",
            "cache_key": "Cache OFF",
            "request_tags": tags or [],
            "requester_ip_address": "127.0.0.1",
            "messages": messages if messages is not None else {},
            "response": response if response is not None else {},
            "status": "success",
        }
        self.spend_logs.append(row)
        return row


def create_app(state: LiteLLMState) -> FastAPI:
    app = FastAPI(title="LiteLLM proxy (aisoar sandbox)")
    app.state.fake = state

    @app.exception_handler(ProxyError)
    async def proxy_error(request: Request, exc: ProxyError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status,
            content={"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": str(exc.status)}},
        )

    def admin(authorization: str | None = Header(None), x_litellm_api_key: str | None = Header(None)) -> None:
        """The master key, as ``Authorization: Bearer`` or ``x-litellm-api-key``."""
        supplied = x_litellm_api_key or (authorization or "").removeprefix("Bearer ").strip()
        if not supplied:
            raise ProxyError(401, "Authentication Error, No api key passed in.", "auth_error", "None")
        if not secrets.compare_digest(supplied, state.master_key):
            raise ProxyError(401, "Authentication Error, Invalid proxy server token passed.", "auth_error", "None")

    def record(request: Request, body: Any) -> None:
        state.requests.append(
            {
                "method": request.method,
                "path": request.url.path,
                "body": body,
                "at": datetime.now(UTC).isoformat(),
                "t": time.time(),
            }
        )

    def set_blocked(key: str, blocked: bool) -> dict[str, Any]:
        token = hash_token(key)
        with state.lock:
            if token not in state.keys:
                raise ProxyError(404, f"Key={key[:8]}... not found", "bad_request_error", "key")
            state.keys[token]["blocked"] = blocked
            state.keys[token]["updated_at"] = datetime.now(UTC).isoformat()
            return {"token": token, **state.keys[token]}

    @app.get("/key/info", dependencies=[Depends(admin)])
    def key_info(
        request: Request,
        key: str | None = None,
    ) -> dict[str, Any]:
        if not key:
            raise ProxyError(400, "key is required", "bad_request_error", "key")
        record(request, {"key": key})
        token = hash_token(key)
        with state.lock:
            if token not in state.keys:  # unknown or deleted: the proxy no longer has its row
                raise ProxyError(404, "Key not found in database", "not_found_error", "key")
            row = json.loads(json.dumps(state.keys[token]))
        return {"key": key, "info": row}

    @app.get("/key/list", dependencies=[Depends(admin)])
    def key_list(request: Request, page: int = 1, size: int = 10) -> dict[str, Any]:
        if page < 1 or not 1 <= size <= 100:
            raise ProxyError(400, "page must be >= 1 and size between 1 and 100", "bad_request_error", "size")
        record(request, {"page": page, "size": size})
        with state.lock:
            tokens = sorted(state.keys)
        total_pages = max(1, -(-len(tokens) // size))
        return {
            "keys": tokens[(page - 1) * size : page * size],
            "total_count": len(tokens),
            "current_page": page,
            "total_pages": total_pages,
        }

    @app.post("/key/block", dependencies=[Depends(admin)])
    def block(
        request: Request,
        body: BlockKeyRequest,
    ) -> dict[str, Any]:
        record(request, body.model_dump())
        return set_blocked(body.key, True)

    @app.post("/key/unblock", dependencies=[Depends(admin)])
    def unblock(
        request: Request,
        body: BlockKeyRequest,
    ) -> dict[str, Any]:
        record(request, body.model_dump())
        return set_blocked(body.key, False)

    @app.post("/key/update", dependencies=[Depends(admin)])
    def update(request: Request, body: UpdateKeyRequest) -> dict[str, Any]:
        sent = body.model_dump(exclude_unset=True)
        record(request, sent)
        if not body.key:
            raise ProxyError(400, "key is required", "bad_request_error", "key")
        for field in ("rpm_limit", "tpm_limit", "max_budget"):
            value = sent.get(field)
            if value is not None and value < 0:
                raise ProxyError(400, f"{field} must be >= 0", "bad_request_error", field)
        token = hash_token(body.key)
        with state.lock:
            row = state.keys.get(token)
            if row is None:
                raise ProxyError(404, f"Key not found: {body.key[:8]}...", "not_found_error", "key")
            for field in UPDATABLE:
                if field in sent:
                    value = sent[field]
                    if field in ("models", "aliases", "metadata") and value is None:
                        value = [] if field == "models" else {}
                    row[field] = value
            if sent.get("guardrails") is not None:  # metadata-backed
                row["metadata"] = {**(row.get("metadata") or {}), "guardrails": list(sent["guardrails"])}
            permission = sent.get("object_permission")
            if permission:  # null or {}: no object permission change
                unknown = sorted(set(permission) - set(OBJECT_PERMISSION_FIELDS))
                if unknown:
                    raise ProxyError(400, f"unknown object_permission field(s): {unknown}", "bad_request_error")
                current = row.get("object_permission") or {"object_permission_id": str(uuid.uuid4())}
                current.update({name: value for name, value in permission.items()})
                row["object_permission"], row["object_permission_id"] = current, current["object_permission_id"]
            row["updated_at"] = datetime.now(UTC).isoformat()
            return {"key": token, **json.loads(json.dumps(row))}

    @app.post("/key/delete", dependencies=[Depends(admin)])
    def delete(
        request: Request,
        body: KeyRequest,
    ) -> dict[str, Any]:
        record(request, body.model_dump())
        if not body.keys and not body.key_aliases:
            raise ProxyError(400, "keys or key_aliases is required", "bad_request_error", "keys")
        deleted = []
        with state.lock:
            for key in body.keys or []:
                token = hash_token(key)
                if token in state.keys:
                    state.deleted[token] = state.keys.pop(token)
                    deleted.append(key)
        return {"deleted_keys": deleted}

    @app.post("/key/generate", dependencies=[Depends(admin)])
    def generate(
        request: Request,
        body: GenerateKeyRequest,
    ) -> dict[str, Any]:
        key = body.key or f"sk-{secrets.token_urlsafe(16)}"
        with state.lock:
            token = state.add_key(key, alias=body.key_alias, models=body.models)
        return {"key": key, "token": token, "key_alias": body.key_alias, "models": body.models}

    @app.get("/spend/logs", dependencies=[Depends(admin)])
    def spend_logs(request: Request, api_key: str | None = None, request_id: str | None = None) -> list[dict[str, Any]]:
        record(request, {"api_key": api_key, "request_id": request_id})
        with state.lock:
            rows = list(state.spend_logs)
        if api_key:
            token = hash_token(api_key)
            rows = [row for row in rows if row["api_key"] == token]
        if request_id:
            rows = [row for row in rows if row["request_id"] == request_id]
        return rows

    @app.post("/mcp-rest/tools/call")
    async def call_tool(request: Request, authorization: str | None = Header(None)) -> JSONResponse:
        """An MCP tool call through the gateway (modeled on LiteLLM's MCP REST route): refused
        for a blocked or unknown key (401) and for a tool in the key's ``blocked_tools`` (403)."""
        key = (authorization or "").removeprefix("Bearer ").strip()
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _chat_error(400, "Invalid JSON body", "invalid_request_error")
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            return _chat_error(400, "name is required", "invalid_request_error")
        with state.lock:
            row = state.keys.get(hash_token(key)) if key else None
            if row is None or row.get("blocked"):
                return _chat_error(401, "Authentication Error - key is blocked or invalid", "auth_error")
            blocked = (row.get("object_permission") or {}).get("blocked_tools") or []
        if name in blocked:
            return _chat_error(403, f"Tool {name} is blocked for this key", "tool_blocked")
        return JSONResponse({"content": [{"type": "text", "text": f"sandbox result of {name}"}], "isError": False})

    @app.post("/chat/completions")
    @app.post("/v1/chat/completions")
    async def chat(request: Request, authorization: str | None = Header(None)) -> JSONResponse:
        key = (authorization or "").removeprefix("Bearer ").strip()
        token = hash_token(key) if key else ""
        with state.lock:
            row = state.keys.get(token)
            if row is None or row.get("blocked"):
                return _chat_error(401, "Authentication Error - key is blocked or invalid", "auth_error")
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _chat_error(400, "Invalid JSON body", "invalid_request_error")
        requested = body.get("model") if isinstance(body, dict) else None
        if not isinstance(requested, str) or not requested:
            return _chat_error(400, "Invalid model name passed in model=None", "invalid_request_error")
        now = time.time()
        with state.lock:
            row = state.keys.get(token)
            if row is None or row.get("blocked"):
                return _chat_error(401, "Authentication Error - key is blocked or invalid", "auth_error")
            allowed = row.get("models") or []
            if allowed and requested not in allowed and "all-proxy-models" not in allowed:
                return _chat_error(
                    401,
                    f"key not allowed to access model. This key can only access models={allowed}. "
                    f"Tried to access {requested}",
                    "key_model_access_denied",
                )
            budget = row.get("max_budget")
            if budget is not None and float(row["spend"]) >= float(budget):
                return _chat_error(
                    400,
                    f"Budget has been exceeded! Current cost: {row['spend']}, Max budget: {budget}",
                    "budget_exceeded",
                )
            window = [t for t in state.recent.get(token, []) if now - t < 60]
            limit = row.get("rpm_limit")
            if limit is not None and len(window) >= int(limit):
                retry = max(1, int(60 - (now - window[0]))) if window else 60
                state.recent[token] = window
                return _chat_error(
                    429,
                    "LiteLLM Rate Limit Handler for rate limit type = key. Crossed TPM / RPM / Max Parallel "
                    f"Request Limit. current rpm: {len(window)}, rpm limit: {limit}",
                    "None",
                    headers={"retry-after": str(retry)},
                )
            window.append(now)
            state.recent[token] = window
            routed = str((row.get("aliases") or {}).get(requested, requested))
            row["spend"] = round(float(row["spend"]) + 0.01, 6)
            row["last_active"] = datetime.now(UTC).isoformat()
            answer = {"role": "assistant", "content": "sandbox answer"}
            metadata = body.get("metadata")
            tags = metadata.get("tags") if isinstance(metadata, dict) else None
            logged = state.add_spend_log(
                token,
                routed,
                messages=body.get("messages"),
                response={"choices": [{"message": answer}]},
                user=str(body.get("user") or ""),
                tags=[str(t) for t in tags] if isinstance(tags, list) else [],
            )
        return JSONResponse(
            {
                "id": logged["request_id"],
                "object": "chat.completion",
                "created": int(now),
                "model": routed,
                "choices": [{"index": 0, "message": answer, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
            }
        )

    return app
