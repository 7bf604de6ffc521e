"""Slack interactivity: the Approve / Reject buttons of an approval request.

Slack POSTs ``payload=<JSON>`` (form-encoded) to the app's Request URL, signed with the app's
signing secret (``X-Slack-Signature: v0=hex(hmac_sha256(secret, "v0:{ts}:{body}"))``, with
``X-Slack-Request-Timestamp``). A request that does not verify, or is older than five
minutes, is refused before its body is read as anything. The clicker's identity is Slack's
``user.id``, which the signature vouches for; whether it may answer is the desk's business.
A replayed click (same user, same ``action_ts``) is recorded once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qs

from pydantic import BaseModel, Field, ValidationError
from slack_sdk.signature import SignatureVerifier

log = logging.getLogger("aisoar.ingress.slack")
APPROVAL_ACTIONS = frozenset({"aisoar_approve", "aisoar_reject"})
MAX_BODY = 64 * 1024


class SlackClick(BaseModel):
    """One button click, as far as aisoar reads it."""

    user_id: str = Field(pattern=r"^[UW][A-Z0-9]{2,30}$")
    user_name: str = Field(default="", max_length=100)
    team_id: str = Field(default="", max_length=30)
    action_id: str = Field(max_length=255)
    approval_id: str = Field(pattern=r"^APR-[0-9]{8}-[0-9a-f]{8}$")
    action_ts: str = Field(pattern=r"^\d{1,12}(\.\d{1,9})?$")
    channel_id: str = Field(default="", pattern=r"^([CDG][A-Z0-9]{2,30})?$")
    message_ts: str = Field(default="", pattern=r"^(\d{1,12}\.\d{1,9})?$")
    thread_ts: str | None = Field(default=None, pattern=r"^\d{1,12}\.\d{1,9}$")


class ClickDesk(Protocol):
    def record_click(self, click: SlackClick) -> Callable[[], None] | None:
        """Record the click (quickly: Slack waits 3 s); return what remains to be done after
        Slack has its answer (tell, update the message, wake the run), or None."""


class SlackRequestError(ValueError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def verify(signing_secret: str, body: bytes, headers: Any) -> None:
    """Raise ``SlackRequestError(401)`` unless Slack signed ``body`` within five minutes."""
    timestamp = headers.get("x-slack-request-timestamp", "")
    signature = headers.get("x-slack-signature", "")
    if not timestamp or not signature:
        raise SlackRequestError(401, "missing X-Slack-Request-Timestamp or X-Slack-Signature")
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise SlackRequestError(401, "X-Slack-Request-Timestamp is not a Unix time")
    if not SignatureVerifier(signing_secret).is_valid(body=body, timestamp=timestamp, signature=signature):
        raise SlackRequestError(401, "the Slack signature does not verify, or the request is older than 5 minutes")


def clicks(body: bytes) -> list[SlackClick]:
    """The approval button clicks of a verified ``block_actions`` payload (others: none)."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True)
        payload = json.loads(form["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError, IndexError) as exc:
        raise SlackRequestError(400, "expected a form field payload holding JSON") from exc
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return []
    user, container = payload.get("user") or {}, payload.get("container") or {}
    message = payload.get("message") or {}
    found = []
    for action in payload.get("actions") or []:
        if not isinstance(action, dict) or action.get("action_id") not in APPROVAL_ACTIONS:
            continue
        try:
            found.append(
                SlackClick(
                    user_id=str(user.get("id", "")),
                    user_name=str(user.get("username") or user.get("name") or "")[:100],
                    team_id=str(user.get("team_id") or "")[:30],
                    action_id=str(action["action_id"]),
                    approval_id=str(action.get("value", "")),
                    action_ts=str(action.get("action_ts", "")),
                    channel_id=str(container.get("channel_id") or (payload.get("channel") or {}).get("id") or ""),
                    message_ts=str(container.get("message_ts") or ""),
                    thread_ts=(message.get("thread_ts") or None) if isinstance(message, dict) else None,
                )
            )
        except (ValidationError, AttributeError) as exc:
            raise SlackRequestError(400, "the click does not look like one of aisoar's buttons") from exc
    return found
