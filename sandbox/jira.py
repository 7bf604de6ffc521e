"""A stand-in for Jira REST v2, enough for the ``jira`` package.

Like Jira: ``GET /rest/api/2/serverInfo`` answers with ``versionNumbers`` (the client
checks it on connect); every request needs basic auth; writes need
``Content-Type: application/json`` and ``X-Atlassian-Token: no-check``; ``POST
/rest/api/2/issue`` validates project, issue type, summary (required, one line, <= 255),
labels (no spaces) and priority, and answers 201 ``{"id", "key", "self"}``. A description or
a comment over 32,767 characters is refused with 400, as Jira refuses it.

The workflow is Jira's simplified one: To Do -> In Progress -> Done (status categories
new / indeterminate / done), with transition ids 11 (Start Progress), 21 (Stop Progress),
31 (Done) and 41 (Reopen). ``GET .../transitions`` offers only the transitions from the
current status; ``POST .../transitions`` with any other id answers 400 like Jira. Remote
links with a ``globalId`` already on the issue are updated, not added again.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

ISSUE_TYPES = {"Task": "10002", "Bug": "10004", "Incident": "10010"}
TEXT_LIMIT = 32767  # Jira's limit for a text field (description) and a comment's body
TOO_LONG = f"The entered text is too long. It exceeds the allowed limit of {TEXT_LIMIT:,} characters."
PRIORITIES = {"Highest": "1", "High": "2", "Medium": "3", "Low": "4", "Lowest": "5"}
STATUSES = {  # name -> (id, category key, category name)
    "To Do": ("10000", "new", "To Do"),
    "In Progress": ("3", "indeterminate", "In Progress"),
    "Done": ("10001", "done", "Done"),
}
CATEGORY_IDS = {"new": 2, "indeterminate": 4, "done": 3}
WORKFLOW = [  # id, name, from, to
    ("11", "Start Progress", ("To Do",), "In Progress"),
    ("21", "Stop Progress", ("In Progress",), "To Do"),
    ("31", "Done", ("To Do", "In Progress"), "Done"),
    ("41", "Reopen", ("Done",), "To Do"),
]


def status_of(name: str) -> dict[str, Any]:
    status_id, category, category_name = STATUSES[name]
    return {
        "id": status_id,
        "name": name,
        "statusCategory": {"id": CATEGORY_IDS[category], "key": category, "name": category_name},
    }


class JiraState:
    def __init__(self, user: str, token: str, projects: list[str]) -> None:
        self.user = user
        self.token = token
        self.projects = {key: str(10000 + i) for i, key in enumerate(projects)}
        self.issues: dict[str, dict[str, Any]] = {}
        self.counters: dict[str, int] = {}
        self.lock = threading.Lock()


def _errors(status: int, errors: dict[str, str] | None = None, messages: list[str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"errorMessages": messages or [], "errors": errors or {}})


def create_app(state: JiraState) -> FastAPI:
    app = FastAPI(title="Jira REST (aisoar sandbox)")
    app.state.fake = state

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        if request.url.path.startswith("/_sandbox"):
            return await call_next(request)
        header = request.headers.get("authorization", "")
        ok = False
        if header.startswith("Basic "):
            try:
                user, _, token = base64.b64decode(header[6:]).decode().partition(":")
                ok = secrets.compare_digest(user, state.user) and secrets.compare_digest(token, state.token)
            except (ValueError, UnicodeDecodeError):
                ok = False
        if not ok:
            return JSONResponse(
                status_code=401,
                content={
                    "errorMessages": ["You are not authenticated. Authentication required to perform this operation."],
                    "errors": {},
                },
            )
        if request.method in {"POST", "PUT", "DELETE"}:
            if request.headers.get("x-atlassian-token") != "no-check":
                return JSONResponse(status_code=403, content={"message": "XSRF check failed"})
            if request.method != "DELETE" and not request.headers.get("content-type", "").startswith(
                "application/json"
            ):
                return JSONResponse(status_code=415, content={"message": "Unsupported Media Type"})
        return await call_next(request)

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    @app.get("/rest/api/2/serverInfo")
    def server_info(request: Request) -> dict[str, Any]:
        return {
            "baseUrl": base(request),
            "version": "9.12.0",
            "versionNumbers": [9, 12, 0],
            "deploymentType": "Server",
            "buildNumber": 9120000,
            "serverTitle": "Jira (aisoar sandbox)",
        }

    @app.get("/rest/api/2/field")
    def fields() -> list[dict[str, Any]]:
        return [
            {
                "id": field_id,
                "key": field_id,
                "name": name,
                "custom": False,
                "navigable": True,
                "searchable": True,
                "clauseNames": [field_id],
                "schema": {"type": kind, "system": field_id},
            }
            for field_id, name, kind in (
                ("summary", "Summary", "string"),
                ("description", "Description", "string"),
                ("labels", "Labels", "array"),
                ("priority", "Priority", "priority"),
                ("issuetype", "Issue Type", "issuetype"),
                ("project", "Project", "project"),
                ("status", "Status", "status"),
                ("comment", "Comment", "comments-page"),
            )
        ]

    @app.get("/rest/api/2/project/{key}")
    def project(key: str, request: Request) -> Any:
        if key not in state.projects and key not in state.projects.values():
            return _errors(404, messages=[f"No project could be found with key '{key}'."])
        real_key = key if key in state.projects else next(k for k, v in state.projects.items() if v == key)
        return {
            "id": state.projects[real_key],
            "key": real_key,
            "name": real_key,
            "self": f"{base(request)}/rest/api/2/project/{state.projects[real_key]}",
            "issueTypes": [{"id": v, "name": k} for k, v in ISSUE_TYPES.items()],
        }

    @app.post("/rest/api/2/issue")
    async def create_issue(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _errors(400, messages=["Unexpected character in request body"])
        fields = body.get("fields") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            return _errors(400, messages=["fields are required"])
        errors: dict[str, str] = {}
        project_ref = fields.get("project") or {}
        project_key = project_ref.get("key") or next(
            (k for k, v in state.projects.items() if v == project_ref.get("id")), None
        )
        if project_key not in state.projects:
            errors["project"] = "valid project is required"
        issuetype = fields.get("issuetype") or {}
        if issuetype.get("name") not in ISSUE_TYPES and issuetype.get("id") not in ISSUE_TYPES.values():
            errors["issuetype"] = "valid issue type is required"
        summary = fields.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            errors["summary"] = "You must specify a summary of the issue."
        elif "\n" in summary or "\r" in summary:
            errors["summary"] = "The summary is invalid because it contains newline characters."
        elif len(summary) > 255:
            errors["summary"] = "Summary must be less than 255 characters."
        if "description" in fields and not isinstance(fields["description"], str | None):
            errors["description"] = "Operation value must be a string"
        elif len(fields.get("description") or "") > TEXT_LIMIT:
            errors["description"] = TOO_LONG
        labels = fields.get("labels", [])
        if not isinstance(labels, list) or any(not isinstance(x, str) or " " in x for x in labels):
            errors["labels"] = "The label contains spaces which is invalid."
        if "priority" in fields and (fields["priority"] or {}).get("name") not in PRIORITIES:
            errors["priority"] = "The priority selected is invalid."
        unknown = set(fields) - {"project", "issuetype", "summary", "description", "labels", "priority"}
        for name in sorted(unknown):
            errors[name] = f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
        if errors or not isinstance(project_key, str):
            return _errors(400, errors=errors)
        with state.lock:
            number = state.counters.get(project_key, 0) + 1
            state.counters[project_key] = number
            key = f"{project_key}-{number}"
            issue_id = str(10000 + len(state.issues) + 1)
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
            state.issues[key] = {
                "id": issue_id,
                "key": key,
                "self": f"{base(request)}/rest/api/2/issue/{issue_id}",
                "fields": {
                    "summary": summary,
                    "description": fields.get("description"),
                    "labels": labels,
                    "issuetype": {"name": issuetype.get("name", "Task")},
                    "project": {"key": project_key, "id": state.projects[project_key]},
                    "priority": fields.get("priority"),
                    "status": status_of("To Do"),
                    "created": now,
                    "updated": now,
                    "comment": {"comments": [], "total": 0},
                },
                "remotelinks": [],
            }
        return JSONResponse(
            status_code=201,
            content={"id": issue_id, "key": key, "self": f"{base(request)}/rest/api/2/issue/{issue_id}"},
        )

    def find(key_or_id: str) -> dict[str, Any] | None:
        if key_or_id in state.issues:
            return state.issues[key_or_id]
        return next((i for i in state.issues.values() if i["id"] == key_or_id), None)

    @app.get("/rest/api/2/issue/{key}")
    def get_issue(key: str) -> Any:
        issue = find(key)
        if issue is None:
            return _errors(404, messages=["Issue Does Not Exist"])
        return {k: v for k, v in issue.items() if k != "remotelinks"}

    @app.get("/rest/api/2/issue/{key}/comment")
    def list_comments(key: str, startAt: int = 0, maxResults: int = 50) -> Any:
        issue = find(key)
        if issue is None:
            return _errors(404, messages=["Issue Does Not Exist"])
        with state.lock:
            comments = list(issue["fields"]["comment"]["comments"])
        page = comments[startAt : startAt + maxResults]
        return {"startAt": startAt, "maxResults": maxResults, "total": len(comments), "comments": page}

    def offered(issue: dict[str, Any]) -> list[dict[str, Any]]:
        current = issue["fields"]["status"]["name"]
        return [
            {"id": tid, "name": name, "to": status_of(target), "hasScreen": False, "isGlobal": False}
            for tid, name, sources, target in WORKFLOW
            if current in sources
        ]

    @app.get("/rest/api/2/issue/{key}/transitions")
    def list_transitions(key: str) -> Any:
        issue = find(key)
        if issue is None:
            return _errors(404, messages=["Issue Does Not Exist"])
        return {"expand": "transitions", "transitions": offered(issue)}

    @app.post("/rest/api/2/issue/{key}/transitions")
    async def do_transition(key: str, request: Request) -> Any:
        issue = find(key)
        if issue is None:
            return _errors(404, messages=["Issue Does Not Exist"])
        try:
            body = await request.json()
        except ValueError:
            return _errors(400, messages=["Unexpected character in request body"])
        transition = body.get("transition") if isinstance(body, dict) else None
        if not isinstance(transition, dict) or transition.get("id") is None:
            return _errors(400, messages=["Missing 'transition' identifier"])
        wanted = str(transition["id"])
        with state.lock:
            chosen = next((t for t in offered(issue) if t["id"] == wanted), None)
            if chosen is None:
                return _errors(400, messages=[f"Transition id '{wanted}' is not valid for this issue."])
            issue["fields"]["status"] = chosen["to"]
            issue["fields"]["updated"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
            issue.setdefault("transitions_done", []).append(wanted)
        return Response(status_code=204)

    @app.get("/rest/api/2/issue/{key}/remotelink")
    def list_remote_links(key: str) -> Any:
        issue = find(key)
        if issue is None:
            return _errors(404, messages=["Issue Does Not Exist"])
        with state.lock:
            return list(issue["remotelinks"])

    @app.post("/rest/api/2/issue/{key}/remotelink")
    async def add_remote_link(key: str, request: Request) -> Any:
        issue = find(key)
        if issue is None:
            return _errors(404, messages=["Issue Does Not Exist"])
        try:
            body = await request.json()
        except ValueError:
            return _errors(400, messages=["Unexpected character in request body"])
        link_object = body.get("object") if isinstance(body, dict) else None
        errors: dict[str, str] = {}
        if not isinstance(link_object, dict):
            return _errors(400, errors={"object": "'object' is required."})
        for name in ("url", "title"):
            if not isinstance(link_object.get(name), str) or not link_object[name].strip():
                errors[name] = f"'{name}' is required."
        if isinstance(link_object.get("url"), str) and not re.match(r"^[a-z][a-z0-9+.-]*://", link_object["url"]):
            errors["url"] = "'url' is not a valid URL."
        if errors:
            return _errors(400, errors=errors)
        global_id = body.get("globalId")
        with state.lock:
            links = issue["remotelinks"]
            existing = next((x for x in links if global_id and x.get("globalId") == global_id), None)
            if existing is not None:
                existing["object"] = link_object
                return JSONResponse(status_code=200, content={"id": existing["id"], "self": existing["self"]})
            link_id = 10000 + sum(len(i["remotelinks"]) for i in state.issues.values())
            link = {
                "id": link_id,
                "self": f"{issue['self']}/remotelink/{link_id}",
                "globalId": global_id,
                "object": link_object,
            }
            links.append(link)
        return JSONResponse(status_code=201, content={"id": link_id, "self": link["self"]})

    @app.post("/rest/api/2/issue/{key}/comment")
    async def add_comment(key: str, request: Request) -> Any:
        issue = find(key)
        if issue is None:
            return _errors(404, messages=["Issue Does Not Exist"])
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("body"), str) or not body["body"].strip():
            return _errors(400, errors={"comment": "Comment body can not be empty!"})
        if len(body["body"]) > TEXT_LIMIT:
            return _errors(400, errors={"comment": TOO_LONG})
        with state.lock:
            comments = issue["fields"]["comment"]
            comment = {
                "id": str(20000 + comments["total"]),
                "body": body["body"],
                "self": f"{issue['self']}/comment/{20000 + comments['total']}",
            }
            comments["comments"].append(comment)
            comments["total"] += 1
        return JSONResponse(status_code=201, content=comment)

    @app.get("/rest/api/2/search")
    def search(jql: str = "", startAt: int = 0, maxResults: int = 50) -> Any:
        project_match = re.search(r'project\s*=\s*"?([A-Z][A-Z0-9_]*)"?', jql)
        label_match = re.search(r'labels\s*=\s*"?([^"\s]+)"?', jql)
        if project_match is None and label_match is None:
            return _errors(400, messages=[f"Error in the JQL Query: unsupported query {jql!r}"])
        with state.lock:
            hits = [
                issue
                for issue in state.issues.values()
                if (project_match is None or issue["fields"]["project"]["key"] == project_match.group(1))
                and (label_match is None or label_match.group(1) in issue["fields"]["labels"])
            ]
        page = hits[startAt : startAt + maxResults]
        return {"startAt": startAt, "maxResults": maxResults, "total": len(hits), "issues": page}

    @app.get("/_sandbox/issues")
    def all_issues() -> list[dict[str, Any]]:
        with state.lock:
            return list(state.issues.values())

    return app
