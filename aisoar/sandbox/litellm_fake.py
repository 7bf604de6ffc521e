"""A stand-in for the LiteLLM proxy's key management API and its chat endpoint.

Checked against the proxy's own OpenAPI document (``/key/*`` subset of LiteLLM 1.108.7):
admin endpoints need the master key (``Authorization: Bearer`` or ``x-litellm-api-key``);
``/key/block`` and ``/key/unblock`` take ``{"key"}`` (the key or its sha256);
``/key/info?key=`` answers ``{"key", "info"}``; invalid bodies get FastAPI's 422 shape.
A blocked or deleted key is refused by ``/chat/completions`` with 401.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
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


class LiteLLMState:
    def __init__(self, master_key: str) -> None:
        self.master_key = master_key
        self.keys: dict[str, dict[str, Any]] = {}
        self.deleted: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
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
            "metadata": {},
            "blocked": None,
            "expires": None,
            "user_id": None,
            "team_id": None,
            "tpm_limit": None,
            "rpm_limit": None,
            "budget_duration": None,
            "created_at": now,
            "updated_at": now,
            "last_active": now,
        }
        return token


def create_app(state: LiteLLMState) -> FastAPI:
    app = FastAPI(title="LiteLLM proxy (aisoar sandbox)")
    app.state.fake = state

    def admin(authorization: str | None = Header(None), x_litellm_api_key: str | None = Header(None)) -> None:
        """The master key, as ``Authorization: Bearer`` or ``x-litellm-api-key``."""
        supplied = x_litellm_api_key or (authorization or "").removeprefix("Bearer ").strip()
        if not supplied:
            raise HTTPException(401, {"error": "No api key passed in."})
        if not secrets.compare_digest(supplied, state.master_key):
            raise HTTPException(401, {"error": "Authentication Error, Invalid proxy server token passed."})

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
                raise HTTPException(404, {"error": "Key not found"})
            state.keys[token]["blocked"] = blocked
            state.keys[token]["updated_at"] = datetime.now(UTC).isoformat()
            return {"token": token, **state.keys[token]}

    @app.get("/key/info", dependencies=[Depends(admin)])
    def key_info(
        request: Request,
        key: str | None = None,
    ) -> dict[str, Any]:
        if not key:
            raise HTTPException(400, {"error": "key is required"})
        record(request, {"key": key})
        token = hash_token(key)
        with state.lock:
            if token in state.keys:
                row = dict(state.keys[token])
                row["status"] = "revoked" if row.get("blocked") else "active"
            elif token in state.deleted:
                row = dict(state.deleted[token], status="deleted")
            else:
                raise HTTPException(404, {"error": f"Key not found: {key[:8]}..."})
        return {"key": key, "info": row}

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

    @app.post("/key/delete", dependencies=[Depends(admin)])
    def delete(
        request: Request,
        body: KeyRequest,
    ) -> dict[str, Any]:
        record(request, body.model_dump())
        if not body.keys and not body.key_aliases:
            raise HTTPException(400, {"error": "keys or key_aliases is required"})
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

    @app.post("/chat/completions")
    @app.post("/v1/chat/completions")
    def chat(authorization: str | None = Header(None)) -> JSONResponse:
        key = (authorization or "").removeprefix("Bearer ").strip()
        token = hash_token(key) if key else ""
        with state.lock:
            row = state.keys.get(token)
            if row is None or row.get("blocked"):
                return JSONResponse(
                    status_code=401,
                    content={
                        "error": {
                            "message": "Authentication Error - key is blocked or invalid",
                            "type": "auth_error",
                            "code": "401",
                        }
                    },
                )
            row["spend"] = round(float(row["spend"]) + 0.01, 6)
        return JSONResponse({"id": "chatcmpl-sandbox", "object": "chat.completion", "choices": []})

    return app
