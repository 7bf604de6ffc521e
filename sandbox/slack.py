"""A stand-in for the Slack Web API methods aisoar uses.

Like Slack: the method name is appended to ``/api/``; a bot token comes as
``Authorization: Bearer xoxb-...``; ``chat.postMessage`` takes JSON or form bodies and
needs ``channel`` and ``text`` or ``blocks``; every failure is HTTP 200 with
``{"ok": false, "error": ...}``; blocks are checked for the limits Slack enforces.

``chat.postMessage`` with ``thread_ts`` replies in a thread: the parent must exist in
that channel (``thread_not_found``). ``chat.update`` needs the channel id and the ts of a
message the bot posted (``channel_not_found``, ``message_not_found``,
``cant_update_message``). ``conversations.replies`` returns the parent and its replies.
Like ``conversations.history``, ``messages`` holds the channel's top-level messages;
thread replies are kept in ``replies``; every update is recorded in ``updates``.
"""

from __future__ import annotations

import json
import re
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
        self.messages: list[dict[str, Any]] = []  # top-level messages, as conversations.history shows them
        self.replies: list[dict[str, Any]] = []  # thread replies (thread_ts = the parent's ts)
        self.updates: list[dict[str, Any]] = []  # every chat.update: channel, ts, text, blocks
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


COLOR = re.compile(r"^(#?[0-9A-Fa-f]{6}|good|warning|danger)$")


def check_attachments(attachments: Any) -> str | None:
    """Return why Slack would reject the attachments, or None."""
    if not isinstance(attachments, list) or len(attachments) > 100:
        return "attachments must be a list of at most 100 attachments"
    for index, attachment in enumerate(attachments):
        if not isinstance(attachment, dict):
            return f"attachments[{index}]: must be an object"
        if "color" in attachment and not (isinstance(attachment["color"], str) and COLOR.match(attachment["color"])):
            return f"attachments[{index}].color: must be a hex colour or good/warning/danger"
        if "blocks" in attachment and (problem := check_blocks(attachment["blocks"])):
            return f"attachments[{index}].{problem}"
    return None


def _json_arg(value: Any) -> tuple[Any, bool]:
    """Slack takes structured arguments as JSON or as JSON-encoded form fields."""
    if isinstance(value, str):
        try:
            return json.loads(value), True
        except ValueError:
            return None, False
    return value, True


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

    def content(args: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None, list[str]]:
        """text/blocks/attachments of a post or an update, or Slack's error."""
        blocks, valid = _json_arg(args.get("blocks"))
        if not valid:
            return None, "invalid_blocks_format", []
        attachments, valid = _json_arg(args.get("attachments"))
        if not valid:
            return None, "invalid_attachments", []
        text = args.get("text")
        if not text and not blocks and not attachments:
            return None, "no_text", []
        if blocks is not None and (problem := check_blocks(blocks)):
            return None, "invalid_blocks", [problem]
        if attachments is not None and (problem := check_attachments(attachments)):
            return None, "invalid_attachments", [problem]
        if text and len(str(text)) > 40000:
            return None, "msg_too_long", []
        return {"text": text or "", "blocks": blocks or [], "attachments": attachments or []}, None, []

    def failed(error: str, errors: list[str] | None = None) -> JSONResponse:
        body: dict[str, Any] = {"ok": False, "error": error}
        if errors:
            body["errors"] = errors
        return JSONResponse(body)

    def parent_of(channel_id: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in state.messages if m["channel"] == channel_id and m["ts"] == ts), None)

    def next_ts() -> str:
        ts = f"{time.time():.6f}"
        taken = {m["ts"] for m in state.messages} | {m["ts"] for m in state.replies}
        while ts in taken:  # Slack's ts is unique per channel
            ts = f"{float(ts) + 0.000001:.6f}"
        return ts

    @app.post("/api/chat.postMessage")
    async def post_message(request: Request) -> JSONResponse:
        args = await arguments(request)
        if error := authorised(request, args):
            return failed(error)
        channel_id = state.channels.get(str(args.get("channel") or ""))
        if channel_id is None:
            return failed("channel_not_found")
        body, error, errors = content(args)
        if body is None:
            return failed(error or "invalid_arguments", errors)
        thread_ts = args.get("thread_ts") or None
        with state.lock:
            parent = parent_of(channel_id, str(thread_ts)) if thread_ts is not None else None
            if thread_ts is not None and parent is None:
                return failed("thread_not_found")
            ts = next_ts()
            message = {
                "type": "message",
                **body,
                "ts": ts,
                "user": "U0AISOAR",
                "thread_ts": thread_ts,
                "channel": channel_id,
            }
            if parent is None:
                state.messages.append(message)
            else:
                state.replies.append(message)
                parent["reply_count"] = parent.get("reply_count", 0) + 1
        return JSONResponse({"ok": True, "channel": channel_id, "ts": ts, "message": message})

    @app.post("/api/chat.update")
    async def update_message(request: Request) -> JSONResponse:
        args = await arguments(request)
        if error := authorised(request, args):
            return failed(error)
        channel = str(args.get("channel") or "")
        ts = str(args.get("ts") or "")
        if not channel or not ts:
            return failed("invalid_arguments")
        if channel not in state.channels.values():  # chat.update takes the channel id, not its name
            return failed("channel_not_found")
        body, error, errors = content(args)
        if body is None:
            return failed(error or "invalid_arguments", errors)
        with state.lock:
            message = parent_of(channel, ts) or next(
                (m for m in state.replies if m["channel"] == channel and m["ts"] == ts), None
            )
            if message is None:
                return failed("message_not_found")
            if message.get("user") != "U0AISOAR":
                return failed("cant_update_message")
            message.update(body, edited={"user": "U0AISOAR", "ts": f"{time.time():.6f}"})
            state.updates.append({"channel": channel, "ts": ts, **body})
        return JSONResponse({"ok": True, "channel": channel, "ts": ts, "text": body["text"], "message": message})

    @app.post("/api/conversations.replies")
    async def replies(request: Request) -> JSONResponse:
        args = await arguments(request)
        if error := authorised(request, args):
            return failed(error)
        channel_id = state.channels.get(str(args.get("channel") or ""))
        if channel_id is None:
            return failed("channel_not_found")
        ts = str(args.get("ts") or "")
        if not ts:
            return failed("invalid_arguments")
        with state.lock:
            parent = parent_of(channel_id, ts)
            if parent is None:
                reply = next((m for m in state.replies if m["channel"] == channel_id and m["ts"] == ts), None)
                parent = parent_of(channel_id, str(reply["thread_ts"])) if reply else None
            if parent is None:
                return failed("thread_not_found")
            thread = [parent] + [
                m for m in state.replies if m["channel"] == channel_id and m["thread_ts"] == parent["ts"]
            ]
        return JSONResponse({"ok": True, "messages": thread, "has_more": False})

    @app.get("/_sandbox/messages")
    def messages() -> list[dict[str, Any]]:
        with state.lock:
            return list(state.messages)

    @app.get("/_sandbox/replies")
    def thread_replies() -> list[dict[str, Any]]:
        with state.lock:
            return list(state.replies)

    @app.post("/api/{method}")
    async def unknown(method: str) -> JSONResponse:
        return JSONResponse({"ok": False, "error": "unknown_method"}, status_code=404)

    return app
