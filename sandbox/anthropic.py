"""A stand-in for the Anthropic Admin API's organization API keys, and the Messages API.

Every request needs ``anthropic-version: 2023-06-01`` (missing or unknown: 400
``invalid_request_error``) and ``x-api-key`` (missing or unknown: 401
``authentication_error``); the admin endpoints need an Admin API key (``sk-ant-admin...``):
a regular key gets 401 ``authentication_error``. Errors have Anthropic's shape
``{"type": "error", "error": {"type", "message"}}`` and every answer a ``request-id`` header.

``GET /v1/organizations/api_keys`` (``limit`` 1..1000, ``status``, ``workspace_id``,
``after_id``) and ``GET /v1/organizations/api_keys/{api_key_id}`` answer API key objects
``{id, type: "api_key", name, workspace_id, created_at, created_by {id, type},
partial_key_hint, status, expires_at}``; ``POST /v1/organizations/api_keys/{api_key_id}``
takes ``{"status": "active"|"inactive"|"archived", "name"?}`` and nothing else; an
archived key cannot be changed. ``POST /v1/messages`` refuses an inactive, archived or
unknown key with 401.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse

VERSIONS = frozenset({"2023-06-01", "2023-01-01"})
STATUSES = ("active", "inactive", "archived")


def _error(status: int, type_: str, message: str) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"type": "error", "error": {"type": type_, "message": message}},
        headers={"request-id": f"req_{secrets.token_hex(12)}"},
    )


def _answer(body: Any) -> JSONResponse:
    return JSONResponse(body, headers={"request-id": f"req_{secrets.token_hex(12)}"})


class AnthropicState:
    def __init__(self, admin_key: str) -> None:
        self.admin_key = admin_key
        self.keys: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, str] = {}  # secret -> key id
        self.requests: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def add_key(
        self,
        secret: str,
        name: str = "Developer Key",
        key_id: str | None = None,
        workspace_id: str | None = "wrkspc_01SandboxWorkspace00001",
        status: str = "active",
    ) -> str:
        key_id = key_id or f"apikey_01{secrets.token_hex(11)}"
        self.keys[key_id] = {
            "id": key_id,
            "type": "api_key",
            "name": name,
            "workspace_id": workspace_id,
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "created_by": {"id": "user_01SandboxCreator000000001", "type": "user"},
            "partial_key_hint": f"{secret[:14]}...{secret[-4:]}",
            "status": status,
            "expires_at": None,
        }
        self.secrets[secret] = key_id
        return key_id


async def _json_object(request: Request) -> dict[str, Any] | JSONResponse:
    """The request's JSON object, or the error the API answers for anything else."""
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        return _error(400, "invalid_request_error", "request body is not valid JSON")
    if not isinstance(body, dict):
        return _error(400, "invalid_request_error", "request body must be an object")
    return body


def create_app(state: AnthropicState) -> FastAPI:
    app = FastAPI(title="Anthropic API (aisoar sandbox)")
    app.state.fake = state

    def check(x_api_key: str | None, version: str | None, admin: bool) -> JSONResponse | None:
        if not version:
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        if version not in VERSIONS:
            return _error(400, "invalid_request_error", f"anthropic-version: {version!r} is not a valid version")
        if not x_api_key:
            return _error(401, "authentication_error", "x-api-key header is required")
        if admin:
            if not secrets.compare_digest(x_api_key, state.admin_key):
                if x_api_key in state.secrets:
                    return _error(
                        401, "authentication_error", "this endpoint requires an Admin API key (sk-ant-admin...)"
                    )
                return _error(401, "authentication_error", "invalid x-api-key")
            return None
        with state.lock:
            key_id = state.secrets.get(x_api_key)
            active = key_id is not None and state.keys.get(key_id, {}).get("status") == "active"
        if not active:
            return _error(401, "authentication_error", "invalid x-api-key")
        return None

    def record(request: Request, body: Any = None) -> None:
        state.requests.append({"method": request.method, "path": request.url.path, "body": body, "t": time.time()})

    @app.get("/v1/organizations/api_keys")
    def list_keys(
        request: Request,
        x_api_key: str | None = Header(None),
        anthropic_version: str | None = Header(None),
        limit: int = 20,
        after_id: str | None = None,
        status: str | None = None,
        workspace_id: str | None = None,
    ) -> JSONResponse:
        if (denied := check(x_api_key, anthropic_version, admin=True)) is not None:
            return denied
        if not 1 <= limit <= 1000:
            return _error(400, "invalid_request_error", "limit: must be between 1 and 1000")
        if status is not None and status not in STATUSES:
            return _error(400, "invalid_request_error", f"status: must be one of {', '.join(STATUSES)}")
        record(request)
        with state.lock:
            rows = [json.loads(json.dumps(k)) for k in state.keys.values()]
        rows = [r for r in rows if (status is None or r["status"] == status)]
        rows = [r for r in rows if (workspace_id is None or r["workspace_id"] == workspace_id)]
        start = 0
        if after_id:
            ids = [r["id"] for r in rows]
            start = ids.index(after_id) + 1 if after_id in ids else len(rows)
        data = rows[start : start + limit]
        return _answer(
            {
                "data": data,
                "has_more": start + limit < len(rows),
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    @app.get("/v1/organizations/api_keys/{api_key_id}")
    def get_key(
        api_key_id: str,
        request: Request,
        x_api_key: str | None = Header(None),
        anthropic_version: str | None = Header(None),
    ) -> JSONResponse:
        if (denied := check(x_api_key, anthropic_version, admin=True)) is not None:
            return denied
        record(request)
        with state.lock:
            key = state.keys.get(api_key_id)
            found = json.loads(json.dumps(key)) if key else None
        if found is None:
            return _error(404, "not_found_error", f"API key not found: {api_key_id[:40]}")
        return _answer(found)

    @app.post("/v1/organizations/api_keys/{api_key_id}")
    async def update_key(
        api_key_id: str,
        request: Request,
        x_api_key: str | None = Header(None),
        anthropic_version: str | None = Header(None),
    ) -> JSONResponse:
        if (denied := check(x_api_key, anthropic_version, admin=True)) is not None:
            return denied
        body = await _json_object(request)
        if isinstance(body, JSONResponse):
            return body
        record(request, body)
        extra = set(body) - {"status", "name"}
        if extra:
            return _error(400, "invalid_request_error", f"{sorted(extra)[0]}: Extra inputs are not permitted")
        if "status" in body and body["status"] not in STATUSES:
            return _error(400, "invalid_request_error", f"status: Input should be {', '.join(map(repr, STATUSES))}")
        if "name" in body and (not isinstance(body["name"], str) or not 1 <= len(body["name"]) <= 500):
            return _error(400, "invalid_request_error", "name: must be a string of 1 to 500 characters")
        with state.lock:
            key = state.keys.get(api_key_id)
            if key is None:
                return _error(404, "not_found_error", f"API key not found: {api_key_id[:40]}")
            if key["status"] == "archived":
                return _error(400, "invalid_request_error", "archived API keys cannot be updated")
            key.update({k: body[k] for k in ("status", "name") if k in body})
            answer = json.loads(json.dumps(key))
        return _answer(answer)

    @app.post("/v1/messages")
    async def messages(
        request: Request,
        x_api_key: str | None = Header(None),
        anthropic_version: str | None = Header(None),
    ) -> JSONResponse:
        if (denied := check(x_api_key, anthropic_version, admin=False)) is not None:
            return denied
        body = await _json_object(request)
        if isinstance(body, JSONResponse):
            return body
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                return _error(400, "invalid_request_error", f"{field}: Field required")
        state.messages.append({"model": body["model"], "t": time.time()})
        return _answer(
            {
                "id": f"msg_{uuid.uuid4().hex[:24]}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": "sandbox answer"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": 3},
            }
        )

    return app
