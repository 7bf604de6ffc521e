"""A stand-in for the Slack Web API methods aisoar uses, and for Slack's interactivity.

Like Slack: the method name is appended to ``/api/``; a bot token comes as
``Authorization: Bearer xoxb-...``; arguments come as JSON, as a form or in the query
string (``users.info`` and ``users.lookupByEmail`` are GETs in slack-sdk); every failure is
HTTP 200 with ``{"ok": false, "error": ...}``; blocks are checked for the limits Slack
enforces, and the blocks Slack stores get a ``block_id`` (and buttons an ``action_id``) when
the poster gave none.

``chat.postMessage`` with ``thread_ts`` replies in a thread: the parent must exist in
that channel (``thread_not_found``). ``chat.update`` needs the channel id and the ts of a
message the bot posted (``channel_not_found``, ``message_not_found``,
``cant_update_message``). ``conversations.replies`` returns the parent and its replies.
Like ``conversations.history``, ``messages`` holds the channels' top-level messages;
direct messages are kept in ``dms``; thread replies (in channels and DMs) in ``replies``;
every update is recorded in ``updates``.

People: ``users`` is the workspace's directory (``users.info``, ``users.lookupByEmail``).
``conversations.open`` gives the bot's DM channel with one person (``D...``, the same id
every time); ``chat.postMessage`` to it (or to the person's user id, as Slack allows) is a
DM. ``chat.postEphemeral`` is recorded in ``ephemeral``.

Interactivity: ``POST /_sandbox/click`` is a person clicking a button of a stored message.
The stand-in builds the ``block_actions`` payload Slack builds, signs it with the signing
secret (``sign``), POSTs it form-encoded to the app's Request URL, gives up after 3 s like
Slack, and tells the caller what it sent and what the app answered (``interactions``).
The payload's ``response_url`` (``/_sandbox/response/{token}``) works 5 times for 30
minutes, like Slack's.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

BLOCK_TYPES = {"section", "header", "context", "divider", "actions", "rich_text", "image", "input"}
TEXT_TYPES = {"mrkdwn", "plain_text"}
BUTTON_STYLES = {"primary", "danger"}

TEAM_ID = "T0SANDBOX"
TEAM_DOMAIN = "sandbox"
BOT_USER_ID = "U0AISOAR"
BOT_ID = "B0AISOAR"
APP_ID = "A0AISOAR"
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,30}$")

INTERACTIVITY_TIMEOUT = 3.0  # Slack shows the user an error when the app has not answered by then
RESPONSE_URL_USES = 5  # a response_url works at most 5 times ...
RESPONSE_URL_TTL = 30 * 60.0  # ... within 30 minutes of the click
SLACK_USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"


def sign(signing_secret: str, timestamp: str | int, body: str | bytes) -> str:
    """Slack's request signature: ``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    raw = body.encode() if isinstance(body, str) else body
    base = b"v0:" + str(timestamp).encode() + b":" + raw
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def user_record(
    user_id: str, name: str, real_name: str, email: str, title: str = "", is_bot: bool = False
) -> dict[str, Any]:
    """A user object as ``users.info`` returns it."""
    return {
        "id": user_id,
        "team_id": TEAM_ID,
        "name": name,
        "deleted": False,
        "real_name": real_name,
        "tz": "Etc/UTC",
        "is_admin": False,
        "is_bot": is_bot,
        "is_app_user": False,
        "updated": 1_700_000_000,
        "profile": {
            "title": title,
            "real_name": real_name,
            "display_name": name,
            "email": email,
            "team": TEAM_ID,
        },
    }


class SlackState:
    def __init__(
        self,
        token: str,
        channels: dict[str, str],
        signing_secret: str | None = None,
        request_url: str | None = None,
    ) -> None:
        self.token = token
        self.channels = channels  # name or id -> id
        self.messages: list[dict[str, Any]] = []  # top-level messages, as conversations.history shows them
        self.replies: list[dict[str, Any]] = []  # thread replies (thread_ts = the parent's ts)
        self.updates: list[dict[str, Any]] = []  # every chat.update: channel, ts, text, blocks
        self.deletions: list[dict[str, Any]] = []  # messages deleted through a response_url
        self.lock = threading.Lock()
        # people: the workspace directory and the bot's DM channels
        self.users: dict[str, dict[str, Any]] = {}  # id -> user object (users.info)
        self.dm_channels: dict[str, str] = {}  # user id -> the bot's DM channel with them (D...)
        self.dms: list[dict[str, Any]] = []  # top-level messages in DM channels
        self.ephemeral: list[dict[str, Any]] = []  # chat.postEphemeral and ephemeral response_url answers
        # interactivity: how Slack calls the app
        self.signing_secret = signing_secret or secrets.token_hex(16)
        self.request_url = request_url  # the app's Request URL; clicks need one
        self.verification_token = secrets.token_urlsafe(18)  # the legacy ``token`` field of payloads
        self.interactivity_timeout = INTERACTIVITY_TIMEOUT
        self.response_url_uses = RESPONSE_URL_USES
        self.response_url_ttl = RESPONSE_URL_TTL
        self.interactions: list[dict[str, Any]] = []  # every delivery: what was sent, what came back
        self.response_urls: dict[str, dict[str, Any]] = {}  # token -> the click it answers, uses, created
        self.users[BOT_USER_ID] = user_record(BOT_USER_ID, "aisoar", "aisoar", "", is_bot=True)

    def add_user(self, id: str, name: str, real_name: str, email: str, title: str = "") -> dict[str, Any]:
        """Add a person to the workspace directory."""
        if not USER_ID.match(id):
            raise ValueError(f"{id!r} is not a Slack user id (U... or W..., upper-case)")
        with self.lock:
            self.users[id] = user_record(id, name, real_name, email, title)
            return self.users[id]

    def dm_channel(self, user_id: str) -> str:
        """The bot's DM channel with ``user_id`` (opened on first use, the same id ever after)."""
        return self.dm_channels.setdefault(user_id, "D" + user_id[1:])

    def dm_user(self, channel_id: str) -> str | None:
        return next((user for user, dm in self.dm_channels.items() if dm == channel_id), None)

    def resolve(self, channel: str) -> str | None:
        """The id of a channel given by name or id, or of an open DM channel."""
        if channel in self.channels:
            return self.channels[channel]
        return channel if self.dm_user(channel) is not None else None

    def channel_name(self, channel_id: str) -> str:
        """What ``channel.name`` says in an interaction payload."""
        if self.dm_user(channel_id) is not None:
            return "directmessage"
        return next((name for name, cid in self.channels.items() if cid == channel_id and name != cid), channel_id)

    def top_level(self, channel_id: str) -> list[dict[str, Any]]:
        return self.dms if self.dm_user(channel_id) is not None else self.messages

    def parent(self, channel_id: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.top_level(channel_id) if m["channel"] == channel_id and m["ts"] == ts), None)

    def find_message(self, channel_id: str, ts: str) -> dict[str, Any] | None:
        """A top-level message or a thread reply."""
        return self.parent(channel_id, ts) or next(
            (m for m in self.replies if m["channel"] == channel_id and m["ts"] == ts), None
        )

    def dms_to(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """The top-level DMs (to ``user_id``, or to anyone), each with ``to``: the person."""
        return [
            {**m, "to": self.dm_user(m["channel"])}
            for m in self.dms
            if user_id is None or self.dm_user(m["channel"]) == user_id
        ]


def _check_text(obj: Any, limit: int, where: str) -> str | None:
    if not isinstance(obj, dict) or obj.get("type") not in TEXT_TYPES or not isinstance(obj.get("text"), str):
        return f"{where}: must be a text object"
    if not obj["text"] or len(obj["text"]) > limit:
        return f"{where}: text must be 1..{limit} characters"
    if obj["type"] == "plain_text" and "verbatim" in obj:
        return f"{where}: verbatim is not allowed on plain_text"
    return None


def _check_button(element: dict[str, Any], where: str) -> str | None:
    problem = _check_text(element.get("text"), 75, f"{where}.text")
    if problem or element["text"]["type"] != "plain_text":
        return problem or f"{where}.text: button text must be plain_text"
    if "value" in element and not (isinstance(element["value"], str) and len(element["value"]) <= 2000):
        return f"{where}.value: must be a string of at most 2000 characters"
    if "style" in element and element["style"] not in BUTTON_STYLES:
        return f"{where}.style: must be primary or danger"
    if "url" in element and not (isinstance(element["url"], str) and len(element["url"]) <= 3000):
        return f"{where}.url: must be a string of at most 3000 characters"
    return None


def _check_element(element: Any, where: str, action_ids: set[str]) -> str | None:
    """An interactive element (actions block element, section accessory)."""
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return f"{where}: must be an element object"
    if "action_id" in element:
        action_id = element["action_id"]
        if not isinstance(action_id, str) or not 1 <= len(action_id) <= 255:
            return f"{where}.action_id: must be 1..255 characters"
        if action_id in action_ids:
            return f"{where}.action_id: {action_id!r} is already used in this block"
        action_ids.add(action_id)
    if element["type"] == "button":
        return _check_button(element, where)
    return None


def check_blocks(blocks: Any) -> str | None:
    """Return why Slack would answer invalid_blocks, or None."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "blocks must be a list of at most 50 blocks"
    block_ids: set[str] = set()
    for index, block in enumerate(blocks):
        where = f"blocks[{index}]"
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            return f"{where}: unknown block type"
        if "block_id" in block:
            block_id = block["block_id"]
            if not isinstance(block_id, str) or not 1 <= len(block_id) <= 255:
                return f"{where}.block_id: must be 1..255 characters"
            if block_id in block_ids:
                return f"{where}.block_id: {block_id!r} is used twice in this message"
            block_ids.add(block_id)
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
            if "accessory" in block and (problem := _check_element(block["accessory"], f"{where}.accessory", set())):
                return problem
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                return f"{where}: context needs 1..10 elements"
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                return f"{where}: actions need 1..25 elements"
            action_ids: set[str] = set()
            for e_index, element in enumerate(elements):
                if problem := _check_element(element, f"{where}.elements[{e_index}]", action_ids):
                    return problem
    return None


def _interactive_elements(block: dict[str, Any]) -> list[dict[str, Any]]:
    if block.get("type") == "actions":
        return [e for e in block.get("elements", []) if isinstance(e, dict)]
    if block.get("type") == "section" and isinstance(block.get("accessory"), dict):
        return [block["accessory"]]
    return []


def _random_id(taken: set[str]) -> str:
    while (new := secrets.token_urlsafe(4)[:5]) in taken:
        pass
    return new


def stamp_blocks(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The blocks as Slack stores them: a generated ``block_id`` on each block that has none,
    a generated ``action_id`` on each interactive element that has none."""
    stamped = copy.deepcopy(blocks)
    block_ids = {b["block_id"] for b in stamped if "block_id" in b}
    for block in stamped:
        if "block_id" not in block:
            block["block_id"] = _random_id(block_ids)
            block_ids.add(block["block_id"])
        elements = _interactive_elements(block)
        action_ids = {e["action_id"] for e in elements if "action_id" in e}
        for element in elements:
            if "action_id" not in element and element.get("type") != "image":
                element["action_id"] = _random_id(action_ids)
                action_ids.add(element["action_id"])
    return stamped


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


def content(args: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None, list[str]]:
    """text/blocks/attachments of a post or an update as Slack stores them, or Slack's error."""
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
    stamped_attachments = [
        {**a, "blocks": stamp_blocks(a["blocks"])} if "blocks" in a else a for a in (attachments or [])
    ]
    return {"text": text or "", "blocks": stamp_blocks(blocks or []), "attachments": stamped_attachments}, None, []


METADATA_EVENT_TYPE = re.compile(r"^[a-zA-Z0-9_]{1,255}$")


def message_metadata(value: Any) -> tuple[dict[str, Any] | None, str]:
    """chat.postMessage's ``metadata`` as Slack checks it: an object (or its JSON) with an
    ``event_type`` (letters, digits, underscores) and an ``event_payload`` object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None, "invalid_metadata_format"
    if not isinstance(value, dict) or set(value) - {"event_type", "event_payload"}:
        return None, "invalid_metadata_format"
    event_type, payload = value.get("event_type"), value.get("event_payload")
    if not isinstance(event_type, str) or not METADATA_EVENT_TYPE.match(event_type) or not isinstance(payload, dict):
        return None, "invalid_metadata_schema"
    if len(json.dumps(payload)) > 8000:
        return None, "metadata_too_large"
    return {"event_type": event_type, "event_payload": payload}, ""


def find_buttons(message: dict[str, Any], action_id: str, block_id: str | None) -> list[tuple[str, dict[str, Any]]]:
    """(block_id, element) of each element of ``message`` with ``action_id``."""
    blocks = list(message.get("blocks") or [])
    for attachment in message.get("attachments") or []:
        blocks.extend(attachment.get("blocks") or [])
    return [
        (str(block.get("block_id", "")), element)
        for block in blocks
        if isinstance(block, dict) and (block_id is None or block.get("block_id") == block_id)
        for element in _interactive_elements(block)
        if element.get("action_id") == action_id
    ]


def _as_delivered(message: dict[str, Any]) -> dict[str, Any]:
    """A stored message as an interaction payload's ``message`` shows it."""
    shown = {k: copy.deepcopy(v) for k, v in message.items() if k != "channel" and v is not None}
    if shown.get("user") == BOT_USER_ID:
        shown.setdefault("bot_id", BOT_ID)
        shown.setdefault("app_id", APP_ID)
    shown.setdefault("team", TEAM_ID)
    return shown


def _problem(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": error, "detail": detail}, status_code=status)


def create_app(state: SlackState) -> FastAPI:
    app = FastAPI(title="Slack Web API (aisoar sandbox)")
    app.state.fake = state

    async def arguments(request: Request) -> dict[str, Any]:
        """The query string's arguments, then the body's (JSON or form)."""
        args: dict[str, Any] = dict(request.query_params)
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            value = json.loads(body or b"{}")
            args |= value if isinstance(value, dict) else {}
        else:
            args |= {k: v[0] for k, v in parse_qs(body.decode()).items()}
        return args

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
                "team": TEAM_DOMAIN,
                "user": "aisoar",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": BOT_ID,
            }
        )

    def failed(error: str, errors: list[str] | None = None) -> JSONResponse:
        body: dict[str, Any] = {"ok": False, "error": error}
        if errors:
            body["errors"] = errors
        return JSONResponse(body)

    def next_ts() -> str:
        ts = f"{time.time():.6f}"
        taken = {m["ts"] for m in state.messages} | {m["ts"] for m in state.dms} | {m["ts"] for m in state.replies}
        while ts in taken:  # Slack's ts is unique per channel
            ts = f"{float(ts) + 0.000001:.6f}"
        return ts

    def post(channel_id: str, body: dict[str, Any], thread_ts: str | None) -> dict[str, Any] | None:
        """Store a message (a reply when ``thread_ts``); None: no such parent. Holds the lock."""
        parent = state.parent(channel_id, thread_ts) if thread_ts is not None else None
        if thread_ts is not None and parent is None:
            return None
        message = {
            "type": "message",
            **body,
            "ts": next_ts(),
            "user": BOT_USER_ID,
            "thread_ts": thread_ts,
            "channel": channel_id,
        }
        if parent is None:
            state.top_level(channel_id).append(message)
        else:
            state.replies.append(message)
            parent["reply_count"] = parent.get("reply_count", 0) + 1
        return message

    def post_target(channel: str) -> str | None:
        """chat.postMessage's channel: a channel, an open DM, or a person's id (their DM with the bot)."""
        if channel in state.users and channel != BOT_USER_ID:
            return state.dm_channel(channel)
        return state.resolve(channel)

    @app.post("/api/chat.postMessage")
    async def post_message(request: Request) -> JSONResponse:
        args = await arguments(request)
        if error := authorised(request, args):
            return failed(error)
        with state.lock:
            channel_id = post_target(str(args.get("channel") or ""))
        if channel_id is None:
            return failed("channel_not_found")
        body, error, errors = content(args)
        if body is None:
            return failed(error or "invalid_arguments", errors)
        if "metadata" in args:
            metadata, problem = message_metadata(args["metadata"])
            if metadata is None:
                return failed(problem)
            body["metadata"] = metadata
        thread_ts = args.get("thread_ts") or None
        with state.lock:
            message = post(channel_id, body, str(thread_ts) if thread_ts is not None else None)
        if message is None:
            return failed("thread_not_found")
        return JSONResponse({"ok": True, "channel": channel_id, "ts": message["ts"], "message": message})

    @app.post("/api/chat.update")
    async def update_message(request: Request) -> JSONResponse:
        args = await arguments(request)
        if error := authorised(request, args):
            return failed(error)
        channel = str(args.get("channel") or "")
        ts = str(args.get("ts") or "")
        if not channel or not ts:
            return failed("invalid_arguments")
        with state.lock:  # chat.update takes the channel id, not its name
            known = channel in state.channels.values() or state.dm_user(channel) is not None
        if not known:
            return failed("channel_not_found")
        body, error, errors = content(args)
        if body is None:
            return failed(error or "invalid_arguments", errors)
        with state.lock:
            message = state.find_message(channel, ts)
            if message is None:
                return failed("message_not_found")
            if message.get("user") != BOT_USER_ID:
                return failed("cant_update_message")
            message.update(body, edited={"user": BOT_USER_ID, "ts": f"{time.time():.6f}"})
            state.updates.append({"channel": channel, "ts": ts, **body})
        return JSONResponse({"ok": True, "channel": channel, "ts": ts, "text": body["text"], "message": message})

    @app.post("/api/chat.postEphemeral")
    async def post_ephemeral(request: Request) -> JSONResponse:
        args = await arguments(request)
        if error := authorised(request, args):
            return failed(error)
        with state.lock:
            channel_id = state.resolve(str(args.get("channel") or ""))
        if channel_id is None:
            return failed("channel_not_found")
        user = str(args.get("user") or "")
        if not user:
            return failed("invalid_arguments")
        if user not in state.users:  # an unknown person is in no channel
            return failed("user_not_in_channel")
        body, error, errors = content(args)
        if body is None:
            return failed(error or "invalid_arguments", errors)
        with state.lock:
            message_ts = next_ts()
            state.ephemeral.append(
                {
                    "channel": channel_id,
                    "user": user,
                    **body,
                    "thread_ts": args.get("thread_ts") or None,
                    "message_ts": message_ts,
                    "via": "chat.postEphemeral",
                }
            )
        return JSONResponse({"ok": True, "message_ts": message_ts})

    @app.post("/api/conversations.history")
    async def history(request: Request) -> JSONResponse:
        """A channel's top-level messages, newest first, after ``oldest`` (exclusive), at most
        ``limit`` (100; 999 at most); a message's ``metadata`` only with ``include_all_metadata``.
        Like Slack, only a conversation id is accepted, not a channel's name."""
        args = await arguments(request)
        if error := authorised(request, args):
            return failed(error)
        channel = str(args.get("channel") or "")
        with state.lock:
            known = channel in state.channels.values() or state.dm_user(channel) is not None
        if not known:
            return failed("channel_not_found")
        try:
            limit = min(999, max(1, int(args.get("limit") or 100)))
            oldest = float(args.get("oldest") or 0)
        except ValueError:
            return failed("invalid_arguments")
        with_metadata = str(args.get("include_all_metadata", "")).lower() in {"1", "true"}
        with state.lock:
            found = [m for m in state.top_level(channel) if m["channel"] == channel and float(m["ts"]) > oldest]
            found.sort(key=lambda m: float(m["ts"]), reverse=True)
            shown = [
                {k: copy.deepcopy(v) for k, v in m.items() if k != "channel" and (with_metadata or k != "metadata")}
                for m in found[:limit]
            ]
        return JSONResponse({"ok": True, "messages": shown, "has_more": len(found) > limit})

    @app.post("/api/conversations.replies")
    async def replies(request: Request) -> JSONResponse:
        args = await arguments(request)
        if error := authorised(request, args):
            return failed(error)
        with state.lock:
            channel_id = state.resolve(str(args.get("channel") or ""))
        if channel_id is None:
            return failed("channel_not_found")
        ts = str(args.get("ts") or "")
        if not ts:
            return failed("invalid_arguments")
        with state.lock:
            parent = state.parent(channel_id, ts)
            if parent is None:
                reply = next((m for m in state.replies if m["channel"] == channel_id and m["ts"] == ts), None)
                parent = state.parent(channel_id, str(reply["thread_ts"])) if reply else None
            if parent is None:
                return failed("thread_not_found")
            thread = [parent] + [
                m for m in state.replies if m["channel"] == channel_id and m["thread_ts"] == parent["ts"]
            ]
        if str(args.get("include_all_metadata", "")).lower() not in {"1", "true"}:  # as Slack: only when asked
            thread = [{k: v for k, v in m.items() if k != "metadata"} for m in thread]
        return JSONResponse({"ok": True, "messages": thread, "has_more": False})

    @app.post("/api/conversations.open")
    async def open_conversation(request: Request) -> JSONResponse:
        args = await arguments(request)
        if error := authorised(request, args):
            return failed(error)
        channel = str(args.get("channel") or "")
        users = [u.strip() for u in str(args.get("users") or "").split(",") if u.strip()]
        with state.lock:
            if channel:  # resume a DM by its id
                if state.dm_user(channel) is None:
                    return failed("channel_not_found")
                return JSONResponse({"ok": True, "no_op": True, "already_open": True, "channel": {"id": channel}})
            if not users:
                return failed("users_list_not_supplied")
            if len(users) > 1:  # a multi-person DM: not something aisoar opens
                return failed("not_supported_by_sandbox", ["the stand-in opens DMs with one person only"])
            user = users[0]
            if user == BOT_USER_ID or state.users.get(user, {}).get("is_bot"):
                return failed("cannot_dm_bot")
            if user not in state.users:
                return failed("user_not_found")
            already = user in state.dm_channels
            answer: dict[str, Any] = {"ok": True, "channel": {"id": state.dm_channel(user)}}
        if already:
            answer |= {"no_op": True, "already_open": True}
        return JSONResponse(answer)

    @app.api_route("/api/users.info", methods=["GET", "POST"])
    async def users_info(request: Request) -> JSONResponse:
        args = await arguments(request)
        if error := authorised(request, args):
            return failed(error)
        user = state.users.get(str(args.get("user") or ""))
        if user is None:
            return failed("user_not_found")
        return JSONResponse({"ok": True, "user": user})

    @app.api_route("/api/users.lookupByEmail", methods=["GET", "POST"])
    async def users_lookup_by_email(request: Request) -> JSONResponse:
        args = await arguments(request)
        if error := authorised(request, args):
            return failed(error)
        email = str(args.get("email") or "").strip().lower()
        if not email:
            return failed("invalid_arguments")
        user = next(
            (u for u in state.users.values() if str(u["profile"].get("email", "")).lower() == email and email), None
        )
        if user is None:
            return failed("users_not_found")
        return JSONResponse({"ok": True, "user": user})

    # -- interactivity ----------------------------------------------------------------
    @app.get("/_sandbox/interactivity")
    def interactivity() -> dict[str, Any]:
        return {"request_url": state.request_url}

    @app.post("/_sandbox/interactivity", response_model=None)
    async def configure_interactivity(request: Request) -> dict[str, Any] | JSONResponse:
        """Set the app's Request URL (and, optionally, the signing secret) as in the app's settings."""
        try:
            config = await request.json()
        except ValueError:
            config = None
        if not isinstance(config, dict):
            return _problem(400, "invalid_json", "send a JSON object")
        if "request_url" in config:
            url = config["request_url"]
            parts = urlsplit(url) if isinstance(url, str) else None
            if url is not None and (parts is None or parts.scheme not in ("http", "https") or not parts.netloc):
                return _problem(400, "invalid_request_url", "request_url must be an http(s) URL or null")
            state.request_url = url
        if "signing_secret" in config:
            secret = config["signing_secret"]
            if not isinstance(secret, str) or not secret.strip():
                return _problem(400, "invalid_signing_secret", "signing_secret must be a non-empty string")
            state.signing_secret = secret
        return {"request_url": state.request_url}

    @app.post("/_sandbox/click")
    async def click(request: Request) -> JSONResponse:
        """A person clicks a button of a message; Slack tells the app, signed."""
        try:
            spec = await request.json()
        except ValueError:
            spec = None
        fields = ("user", "channel", "message_ts", "action_id")
        if not isinstance(spec, dict) or not all(isinstance(spec.get(f), str) and spec[f] for f in fields):
            return _problem(400, "invalid_click", f"send a JSON object with the strings {', '.join(fields)}")
        block_id = spec.get("block_id")
        base = str(request.base_url).rstrip("/")
        with state.lock:
            user = state.users.get(spec["user"])
            if user is None:
                return _problem(404, "user_not_found", f"no user {spec['user']} in the workspace directory")
            if user["is_bot"]:
                return _problem(400, "user_is_bot", f"{spec['user']} is a bot: bots do not click buttons")
            channel_id = state.resolve(spec["channel"])
            if channel_id is None:
                return _problem(404, "channel_not_found", f"no channel {spec['channel']}")
            message = state.find_message(channel_id, spec["message_ts"])
            if message is None:
                return _problem(
                    404, "message_not_found", f"no message ts={spec['message_ts']} in {channel_id}: nothing to click"
                )
            found = find_buttons(message, spec["action_id"], block_id if isinstance(block_id, str) else None)
            if not found:
                return _problem(
                    404,
                    "action_not_found",
                    f"message ts={spec['message_ts']} has no button with action_id {spec['action_id']!r}",
                )
            if len(found) > 1:
                return _problem(
                    409,
                    "ambiguous_action",
                    f"{len(found)} elements have action_id {spec['action_id']!r}: give block_id",
                )
            found_block_id, element = found[0]
            if element.get("type") != "button":
                return _problem(400, "not_a_button", f"{spec['action_id']!r} is a {element.get('type')}, not a button")
            if not state.request_url:
                return _problem(
                    409, "no_request_url", "interactivity has no Request URL: POST /_sandbox/interactivity first"
                )
            url = state.request_url
            secret = state.signing_secret
            token = secrets.token_urlsafe(24)
            state.response_urls[token] = {
                "channel": channel_id,
                "message_ts": message["ts"],
                "thread_ts": message.get("thread_ts"),
                "user": user["id"],
                "created": time.time(),
                "uses": 0,
            }
            now = f"{time.time():.6f}"
            action: dict[str, Any] = {
                "action_id": element["action_id"],
                "block_id": found_block_id,
                "text": {"emoji": True, **element["text"]},
            }
            if "value" in element:
                action["value"] = element["value"]
            if "style" in element:
                action["style"] = element["style"]
            action |= {"type": "button", "action_ts": now}
            container: dict[str, Any] = {
                "type": "message",
                "message_ts": message["ts"],
                "channel_id": channel_id,
                "is_ephemeral": False,
            }
            if message.get("thread_ts"):
                container["thread_ts"] = message["thread_ts"]
            payload: dict[str, Any] = {
                "type": "block_actions",
                "user": {"id": user["id"], "username": user["name"], "name": user["name"], "team_id": TEAM_ID},
                "api_app_id": APP_ID,
                "token": state.verification_token,
                "container": container,
                "trigger_id": f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}",
                "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
                "enterprise": None,
                "is_enterprise_install": False,
                "channel": {"id": channel_id, "name": state.channel_name(channel_id)},
                "message": _as_delivered(message),
                "state": {"values": {}},
                "response_url": f"{base}/_sandbox/response/{token}",
                "actions": [action],
            }
        body = urlencode({"payload": json.dumps(payload)})
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": SLACK_USER_AGENT,
            "Accept": "application/json,*/*",
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": sign(secret, timestamp, body),
        }
        outcome, status, answer, problem = await deliver(url, body, headers)
        record = {
            "id": 0,
            "at": time.time(),
            "url": url,
            "payload": payload,
            "sent": {"url": url, "headers": headers, "body": body},
            "outcome": outcome,
            "status": status,
            "body": answer,
            "error": problem,
            "response_url": payload["response_url"],
        }
        with state.lock:
            record["id"] = len(state.interactions) + 1
            state.interactions.append(record)
        return JSONResponse(record)

    async def deliver(url: str, body: str, headers: dict[str, str]) -> tuple[str, int | None, str | None, str | None]:
        """(outcome, the app's status, its body, what went wrong). Slack waits 3 s, never retries."""
        async with httpx.AsyncClient(follow_redirects=False) as client:
            try:
                response = await asyncio.wait_for(
                    client.post(url, content=body.encode(), headers=headers), state.interactivity_timeout
                )
            except TimeoutError:
                return "timeout", None, None, f"no answer within {state.interactivity_timeout:g}s"
            except httpx.HTTPError as exc:
                return "unreachable", None, None, f"{type(exc).__name__}: {exc}"
        outcome = "ok" if response.status_code == 200 else "error_status"  # Slack shows the user an error
        return outcome, response.status_code, response.text, None

    @app.post("/_sandbox/response/{token}")
    async def respond(token: str, request: Request) -> JSONResponse:
        """A click's response_url: replace or delete the clicked message, or answer the clicker."""
        try:
            args = await request.json()
        except ValueError:
            args = None
        if not isinstance(args, dict):
            return _problem(400, "invalid_payload", "send a JSON object")
        with state.lock:
            click = state.response_urls.get(token)
            if click is None or time.time() - click["created"] > state.response_url_ttl:
                return _problem(404, "expired_url", "this response_url is unknown or older than 30 minutes")
            if click["uses"] >= state.response_url_uses:
                return _problem(404, "used_url", f"this response_url was used {click['uses']} times already")
        if args.get("delete_original") in (True, "true"):
            with state.lock:
                message = state.find_message(click["channel"], click["message_ts"])
                if message is None:
                    return _problem(404, "message_not_found", "the clicked message is gone")
                for kept in (state.top_level(click["channel"]), state.replies):
                    if message in kept:
                        kept.remove(message)
                state.deletions.append({"channel": click["channel"], "ts": click["message_ts"], "via": "response_url"})
                click["uses"] += 1
            return JSONResponse({"ok": True})
        body, error, errors = content(args)
        if body is None:
            return JSONResponse({"ok": False, "error": error or "invalid_payload", "errors": errors}, status_code=400)
        with state.lock:
            if args.get("replace_original") in (True, "true"):
                message = state.find_message(click["channel"], click["message_ts"])
                if message is None:
                    return _problem(404, "message_not_found", "the clicked message is gone")
                message.update(body, edited={"user": BOT_USER_ID, "ts": f"{time.time():.6f}"})
                state.updates.append(
                    {"channel": click["channel"], "ts": click["message_ts"], **body, "via": "response_url"}
                )
            elif args.get("response_type") == "in_channel":
                thread_ts = args.get("thread_ts") or None
                if post(click["channel"], body, str(thread_ts) if thread_ts else None) is None:
                    return _problem(404, "thread_not_found", "no such thread")
            else:  # ephemeral, Slack's default: only the clicker sees it
                state.ephemeral.append(
                    {
                        "channel": click["channel"],
                        "user": click["user"],
                        **body,
                        "thread_ts": click["thread_ts"],
                        "message_ts": next_ts(),
                        "via": "response_url",
                    }
                )
            click["uses"] += 1
        return JSONResponse({"ok": True})

    # -- what the stand-in received -----------------------------------------------------
    @app.get("/_sandbox/messages")
    def messages() -> list[dict[str, Any]]:
        with state.lock:
            return list(state.messages)

    @app.get("/_sandbox/replies")
    def thread_replies() -> list[dict[str, Any]]:
        with state.lock:
            return list(state.replies)

    @app.get("/_sandbox/dms")
    def dms(user: str | None = None) -> list[dict[str, Any]]:
        with state.lock:
            return state.dms_to(user)

    @app.get("/_sandbox/ephemeral")
    def ephemeral(user: str | None = None) -> list[dict[str, Any]]:
        with state.lock:
            return [e for e in state.ephemeral if user is None or e["user"] == user]

    @app.get("/_sandbox/updates")
    def updates() -> list[dict[str, Any]]:
        with state.lock:
            return list(state.updates)

    @app.get("/_sandbox/interactions")
    def interactions() -> list[dict[str, Any]]:
        with state.lock:
            return list(state.interactions)

    @app.get("/_sandbox/users")
    def users() -> list[dict[str, Any]]:
        with state.lock:
            return list(state.users.values())

    @app.api_route("/api/{method}", methods=["GET", "POST"])
    async def unknown(method: str) -> JSONResponse:
        return JSONResponse({"ok": False, "error": "unknown_method"}, status_code=404)

    return app
