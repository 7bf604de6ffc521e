"""A stand-in for the PagerDuty Events API v2 (``POST /v2/enqueue``).

Like PagerDuty: a 32-character ``routing_key`` of a known integration, ``event_action`` one
of trigger / acknowledge / resolve, a ``payload`` with ``summary`` (<= 1024), ``source`` and
``severity`` (critical, error, warning, info) on trigger, a ``dedup_key`` of at most 255
characters; 202 ``{"status": "success", "message": "Event processed", "dedup_key"}`` or
400 ``{"status": "invalid event", "message", "errors": [...]}``.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SEVERITIES = {"critical", "error", "warning", "info"}


class PagerDutyState:
    def __init__(self, routing_key: str | None = None) -> None:
        self.routing_key = routing_key or secrets.token_hex(16)
        self.alerts: dict[str, dict[str, Any]] = {}  # dedup key -> alert
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()


def _invalid(errors: list[str]) -> JSONResponse:
    return JSONResponse(
        status_code=400, content={"status": "invalid event", "message": "Event object is invalid", "errors": errors}
    )


def validate_event(body: Any, routing_key: str) -> list[str]:
    if not isinstance(body, dict):
        return ["Event object must be a JSON object"]
    errors = []
    if body.get("routing_key") != routing_key:
        errors.append("'routing_key' is invalid")
    action = body.get("event_action")
    if action not in {"trigger", "acknowledge", "resolve"}:
        errors.append("'event_action' is invalid (must be one of trigger, acknowledge, resolve)")
    dedup_key = body.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in {"acknowledge", "resolve"} and not dedup_key:
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if action == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or invalid")
        else:
            summary = payload.get("summary")
            if not isinstance(summary, str) or not summary or len(summary) > 1024:
                errors.append("'payload.summary' is missing or longer than 1024 characters")
            if not isinstance(payload.get("source"), str) or not payload["source"]:
                errors.append("'payload.source' is missing")
            if payload.get("severity") not in SEVERITIES:
                errors.append("'payload.severity' is invalid (critical, error, warning, info)")
    return errors


def create_app(state: PagerDutyState) -> FastAPI:
    app = FastAPI(title="PagerDuty Events API v2 (aisoar sandbox)")
    app.state.fake = state

    @app.post("/v2/enqueue")
    async def enqueue(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _invalid(["Request body is not valid JSON"])
        if errors := validate_event(body, state.routing_key):
            return _invalid(errors)
        dedup_key = body.get("dedup_key") or secrets.token_hex(16)
        with state.lock:
            state.events.append(body)
            if body["event_action"] == "trigger":
                alert = state.alerts.setdefault(dedup_key, {"status": "triggered", "events": 0})
                alert.update(status="triggered", summary=body["payload"]["summary"], links=body.get("links", []))
                alert["events"] += 1
            elif dedup_key in state.alerts:  # like PagerDuty: ack/resolve of an unknown key is accepted, ignored
                state.alerts[dedup_key]["status"] = (
                    "acknowledged" if body["event_action"] == "acknowledge" else "resolved"
                )
        return JSONResponse(
            status_code=202, content={"status": "success", "message": "Event processed", "dedup_key": dedup_key}
        )

    return app
