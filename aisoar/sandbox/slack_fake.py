"""A stand-in for the Slack Web API methods aisoar uses.

Like Slack: the method name is appended to ``/api/``; a bot token comes as
``Authorization: Bearer xoxb-...``; ``chat.postMessage`` takes JSON or form bodies and
needs ``channel`` and ``text`` or ``blocks``; every failure is HTTP 200 with
``{"ok": false, "error": ...}``; blocks are checked for the limits Slack enforces.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

BLOCK_TYPES = {"section", "header", "context", "divider", "actions", "rich_text", "image", "input"}
TEXT_TYPES = {"mrkdwn", "plain_text"}


class SlackState:
    def __init__(self, token: str, channels: dict[str, str]) -> None:
        self.token = token
        self.channels = channels  # name or id -> id
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()


def _check_text(obj: Any, limit: int, where: str) -> str | None:
    if not isinstance(obj, dict) or obj.get("type") not in TEXT_TYPES or not isinstance(obj.get("text"), str):
        return f"{where}: must be a text object"
    if not obj["text"] or len(obj["text"]) > limit:
        return f"{where}: text must be 1..{limit} characters"
    if obj["type"] == "plain_text" and "verbatim" in obj:
        return f"{where}: verbatim is not allowed on plain_text"
    return None


def check_blocks(blocks: Any) -> str | None:
    """Return why Slack would answer invalid_blocks, or None."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "blocks must be a list of at most 50 blocks"
    for index, block in enumerate(blocks):
        where = f"blocks[{index}]"
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            return f"{where}: unknown block type"
        kind = block["type"]
        if kind == "header":
            problem = _check_text(block.get("text"), 150, f"{where}.text")
            if problem or block["text"]["type"] != "plain_text":
                return problem or f"{where}.text: header text must be plain_text"
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                return f"{where}: a section needs text or fields"
            if "text" in block and (problem := _check_text(block["text"], 3000, f"{where}.text")):
                return problem
            for f_index, field in enumerate(block.get("fields", [])):
                if problem := _check_text(field, 2000, f"{where}.fields[{f_index}]"):
                    return problem
            if len(block.get("fields", [])) > 10:
                return f"{where}: at most 10 fields"
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                return f"{where}: context needs 1..10 elements"
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                return f"{where}: actions need 1..25 elements"
    return None


def create_app(state: SlackState) -> FastAPI:
    app = FastAPI(title="Slack Web API (aisoar sandbox)")
    app.state.fake = state

    async def arguments(request: Request) -> dict[str, Any]:
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            value = json.loads(body or b"{}")
            return value if isinstance(value, dict) else {}
        return {k: v[0] for k, v in parse_qs(body.decode()).items()}

    def authorised(request: Request, args: dict[str, Any]) -> str | None:
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or args.get("token", "")
        if not token:
            return "not_authed"
        if not secrets.compare_digest(str(token), state.token):
            return "invalid_auth"
        return None

    @app.post("/api/auth.test")
    async def auth_test(request: Request) -> JSONResponse:
        args = await arguments(request)
        if error := authorised(request, args):
            return JSONResponse({"ok": False, "error": error})
        return JSONResponse(
            {
                "ok": True,
                "url": "https://sandbox.slack.invalid/",
                "team": "sandbox",
                "user": "aisoar",
                "team_id": "T0SANDBOX",
                "user_id": "U0AISOAR",
                "bot_id": "B0AISOAR",
            }
        )

    @app.post("/api/chat.postMessage")
    async def post_message(request: Request) -> JSONResponse:
        args = await arguments(request)
        if error := authorised(request, args):
            return JSONResponse({"ok": False, "error": error})
        channel = args.get("channel")
        if not channel:
            return JSONResponse({"ok": False, "error": "channel_not_found"})
        channel_id = state.channels.get(str(channel))
        if channel_id is None:
            return JSONResponse({"ok": False, "error": "channel_not_found"})
        blocks = args.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except ValueError:
                return JSONResponse({"ok": False, "error": "invalid_blocks_format"})
        text = args.get("text")
        if not text and not blocks:
            return JSONResponse({"ok": False, "error": "no_text"})
        if blocks is not None and (problem := check_blocks(blocks)):
            return JSONResponse({"ok": False, "error": "invalid_blocks", "errors": [problem]})
        if text and len(str(text)) > 40000:
            return JSONResponse({"ok": False, "error": "msg_too_long"})
        ts = f"{time.time():.6f}"
        message = {
            "type": "message",
            "text": text or "",
            "blocks": blocks or [],
            "ts": ts,
            "user": "U0AISOAR",
            "thread_ts": args.get("thread_ts"),
            "channel": channel_id,
        }
        with state.lock:
            state.messages.append(message)
        return JSONResponse({"ok": True, "channel": channel_id, "ts": ts, "message": message})

    @app.get("/_sandbox/messages")
    def messages() -> list[dict[str, Any]]:
        with state.lock:
            return list(state.messages)

    @app.post("/api/{method}")
    async def unknown(method: str) -> JSONResponse:
        return JSONResponse({"ok": False, "error": "unknown_method"}, status_code=404)

    return app
