"""A stand-in for the OpenAI Admin API's projects, project API keys and project service
accounts, and for inference with the keys.

Every admin endpoint needs an admin key (``Authorization: Bearer sk-admin-...``):
``GET /v1/organization/projects``; ``GET/DELETE /v1/organization/projects/{project_id}/api_keys[/{key_id}]``
(project keys cannot be disabled, only deleted);
``GET /v1/organization/projects/{project_id}/service_accounts[/{id}]`` and ``DELETE`` of one, which
answers ``{"object": "organization.project.service_account.deleted", "id", "deleted": true}`` and
deletes every key the service account owns. Lists are cursor pages (``limit``, ``after``;
``data``, ``first_id``, ``last_id``, ``has_more``). A deleted project key is refused by
``/v1/chat/completions`` with 401.
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


def _page(items: list[dict[str, Any]], limit: int, after: str | None) -> dict[str, Any] | JSONResponse:
    if not 1 <= limit <= 100:
        return _error(400, "limit must be between 1 and 100", code="invalid_value")
    start = 0
    if after:
        ids = [item["id"] for item in items]
        if after not in ids:
            return _error(400, f"Invalid 'after': {after}", code="invalid_value")
        start = ids.index(after) + 1
    data = items[start : start + limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": start + limit < len(items),
    }


class OpenAIState:
    def __init__(self, admin_key: str) -> None:
        self.admin_key = admin_key
        self.projects: dict[str, dict[str, dict[str, Any]]] = {}
        self.service_accounts: dict[str, dict[str, dict[str, Any]]] = {}
        self.secrets: dict[str, tuple[str, str]] = {}  # secret -> (project, key id)
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def add_service_account(
        self, project_id: str, name: str, account_id: str | None = None, role: str = "member"
    ) -> str:
        account_id = account_id or f"svc_acct_{secrets.token_hex(8)}"
        self.projects.setdefault(project_id, {})
        self.service_accounts.setdefault(project_id, {})[account_id] = {
            "object": "organization.project.service_account",
            "id": account_id,
            "name": name,
            "role": role,
            "created_at": int(time.time()),
        }
        return account_id

    def add_key(
        self,
        project_id: str,
        secret: str,
        name: str = "service key",
        key_id: str | None = None,
        service_account_id: str | None = None,
    ) -> str:
        """A project key owned by a service account (a new one named after the key unless given)."""
        key_id = key_id or f"key_{secrets.token_hex(8)}"
        accounts = self.service_accounts.get(project_id, {})
        if service_account_id is None or service_account_id not in accounts:
            service_account_id = self.add_service_account(project_id, name, service_account_id)
        account = self.service_accounts[project_id][service_account_id]
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
                    "id": service_account_id,
                    "name": account["name"],
                    "role": account["role"],
                    "created_at": account["created_at"],
                },
            },
        }
        self.secrets[secret] = (project_id, key_id)
        return key_id

    def _drop_key(self, project_id: str, key_id: str) -> None:
        del self.projects[project_id][key_id]
        for secret, (project, kid) in list(self.secrets.items()):
            if (project, kid) == (project_id, key_id):
                del self.secrets[secret]


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

    @app.get("/v1/organization/projects")
    def list_projects(authorization: str | None = Header(None), limit: int = 20, after: str | None = None) -> Any:
        if (denied := check_admin(authorization)) is not None:
            return denied
        with state.lock:
            projects = [
                {"object": "organization.project", "id": pid, "name": pid, "created_at": 0, "status": "active"}
                for pid in sorted(state.projects)
            ]
        return _page(projects, limit, after)

    @app.get("/v1/organization/projects/{project_id}/api_keys")
    def list_keys(
        project_id: str,
        request: Request,
        authorization: str | None = Header(None),
        limit: int = 20,
        after: str | None = None,
    ) -> Any:
        if (denied := check_admin(authorization)) is not None:
            return denied
        with state.lock:
            if project_id not in state.projects:
                return _error(404, f"No such project: {project_id}", code="not_found")
            data = list(state.projects[project_id].values())
        return _page(data, limit, after)

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
            state._drop_key(project_id, key_id)
        return {"object": "organization.project.api_key.deleted", "id": key_id, "deleted": True}

    @app.get("/v1/organization/projects/{project_id}/service_accounts")
    def list_accounts(
        project_id: str, authorization: str | None = Header(None), limit: int = 20, after: str | None = None
    ) -> Any:
        if (denied := check_admin(authorization)) is not None:
            return denied
        with state.lock:
            if project_id not in state.projects:
                return _error(404, f"No such project: {project_id}", code="not_found")
            data = list(state.service_accounts.get(project_id, {}).values())
        return _page(data, limit, after)

    @app.get("/v1/organization/projects/{project_id}/service_accounts/{account_id}")
    def get_account(project_id: str, account_id: str, authorization: str | None = Header(None)) -> Any:
        if (denied := check_admin(authorization)) is not None:
            return denied
        with state.lock:
            account = state.service_accounts.get(project_id, {}).get(account_id)
        return account if account else _error(404, f"No such service account: {account_id}", code="not_found")

    @app.delete("/v1/organization/projects/{project_id}/service_accounts/{account_id}")
    def delete_account(
        project_id: str, account_id: str, request: Request, authorization: str | None = Header(None)
    ) -> Any:
        if (denied := check_admin(authorization)) is not None:
            return denied
        with state.lock:
            state.requests.append({"method": "DELETE", "path": request.url.path, "t": time.time()})
            if account_id not in state.service_accounts.get(project_id, {}):
                return _error(404, f"No such service account: {account_id}", code="not_found")
            del state.service_accounts[project_id][account_id]
            for key_id, key in list(state.projects.get(project_id, {}).items()):
                if key["owner"].get("service_account", {}).get("id") == account_id:
                    state._drop_key(project_id, key_id)
        return {"object": "organization.project.service_account.deleted", "id": account_id, "deleted": True}

    @app.post("/v1/chat/completions")
    def chat(authorization: str | None = Header(None)) -> Any:
        supplied = (authorization or "").removeprefix("Bearer ").strip()
        with state.lock:
            known = supplied in state.secrets
        if not known:
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        return {"id": "chatcmpl-sandbox", "object": "chat.completion", "choices": []}

    return app
