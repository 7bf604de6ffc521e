"""A stand-in for the OpenAI Admin API's project API keys, and for inference with them.

``GET/DELETE /v1/organization/projects/{project_id}/api_keys[/{key_id}]`` need an admin
key (``Authorization: Bearer sk-admin-...``); project keys cannot be disabled, only
deleted. A deleted project key is refused by ``/v1/chat/completions`` with 401.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse


def _error(status: int, message: str, code: str | None = None, type_: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"message": message, "type": type_, "param": None, "code": code}}
    )


class OpenAIState:
    def __init__(self, admin_key: str) -> None:
        self.admin_key = admin_key
        self.projects: dict[str, dict[str, dict[str, Any]]] = {}
        self.secrets: dict[str, tuple[str, str]] = {}  # secret -> (project, key id)
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def add_key(self, project_id: str, secret: str, name: str = "service key", key_id: str | None = None) -> str:
        key_id = key_id or f"key_{secrets.token_hex(8)}"
        self.projects.setdefault(project_id, {})[key_id] = {
            "object": "organization.project.api_key",
            "redacted_value": f"{secret[:8]}...{secret[-4:]}",
            "name": name,
            "created_at": int(time.time()),
            "last_used_at": int(time.time()),
            "id": key_id,
            "owner": {
                "type": "service_account",
                "service_account": {
                    "object": "organization.project.service_account",
                    "id": "svc_acct_sandbox",
                    "name": name,
                    "role": "member",
                    "created_at": int(time.time()),
                },
            },
        }
        self.secrets[secret] = (project_id, key_id)
        return key_id


def create_app(state: OpenAIState) -> FastAPI:
    app = FastAPI(title="OpenAI Admin API (aisoar sandbox)")
    app.state.fake = state

    def check_admin(authorization: str | None) -> JSONResponse | None:
        supplied = (authorization or "").removeprefix("Bearer ").strip()
        if not supplied:
            return _error(401, "You didn't provide an API key.", type_="invalid_request_error")
        if not secrets.compare_digest(supplied, state.admin_key):
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        if not supplied.startswith("sk-admin-"):
            return _error(403, "Admin API keys are required for this endpoint.", code="insufficient_permissions")
        return None

    @app.get("/v1/organization/projects/{project_id}/api_keys")
    def list_keys(project_id: str, request: Request, authorization: str | None = Header(None)) -> Any:
        if (denied := check_admin(authorization)) is not None:
            return denied
        with state.lock:
            if project_id not in state.projects:
                return _error(404, f"No such project: {project_id}", code="not_found")
            data = list(state.projects[project_id].values())
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": False,
        }

    @app.get("/v1/organization/projects/{project_id}/api_keys/{key_id}")
    def get_key(project_id: str, key_id: str, authorization: str | None = Header(None)) -> Any:
        if (denied := check_admin(authorization)) is not None:
            return denied
        with state.lock:
            key = state.projects.get(project_id, {}).get(key_id)
        return key if key else _error(404, f"No such API key: {key_id}", code="not_found")

    @app.delete("/v1/organization/projects/{project_id}/api_keys/{key_id}")
    def delete_key(project_id: str, key_id: str, request: Request, authorization: str | None = Header(None)) -> Any:
        if (denied := check_admin(authorization)) is not None:
            return denied
        with state.lock:
            state.requests.append({"method": "DELETE", "path": request.url.path, "t": time.time()})
            if key_id not in state.projects.get(project_id, {}):
                return _error(404, f"No such API key: {key_id}", code="not_found")
            del state.projects[project_id][key_id]
            for secret, (project, kid) in list(state.secrets.items()):
                if (project, kid) == (project_id, key_id):
                    del state.secrets[secret]
        return {"object": "organization.project.api_key.deleted", "id": key_id, "deleted": True}

    @app.post("/v1/chat/completions")
    def chat(authorization: str | None = Header(None)) -> Any:
        supplied = (authorization or "").removeprefix("Bearer ").strip()
        with state.lock:
            known = supplied in state.secrets
        if not known:
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        return {"id": "chatcmpl-sandbox", "object": "chat.completion", "choices": []}

    return app
