"""Slack Web API through slack-sdk's WebClient (base URL configurable for the sandbox).

One parent message per incident, later notifications as threaded replies, the parent kept
current with ``chat.update``. Retries are slack-sdk's own retry handlers, bounded and
configured from the shared ``Backoff`` policy: a 429 waits as its Retry-After says (capped,
so a hostile answer cannot stall a run), 5xx and connection errors back off with jitter. A
timeout is not retried: Slack may have posted the message, and a second post would be a
duplicate in the channel.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from http.client import RemoteDisconnected
from typing import Any
from urllib.error import URLError

from pydantic import Field, SecretStr
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from connectors.errors import NOT_ACTED_STATUSES, ConnectorError, PlanGuard
from connectors.retry import RETRY_STATUSES, Backoff, Failure, with_retries
from connectors.system import StandIn, System, SystemSettings, secret

TITLE = "Slack"


class SlackSettings(SystemSettings):
    base_url: str = "https://slack.com/api/"
    token: SecretStr | None = None
    channel: str | None = Field(None, description="the incident channel (name or id)")


TS = re.compile(r"^\d{1,12}\.\d{1,9}$")
CHANNEL_ID = re.compile(r"^[CDG][A-Z0-9]{2,30}$")

# slack-sdk logs each failed request at ERROR level with the exception (never the token);
# keep its chatter out of the run logs unless someone asks for it.
_LOG = logging.getLogger("aisoar.connectors.slack")


class SlackNotifier:
    def __init__(
        self,
        token: str,
        channel: str,
        base_url: str,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: float = 0.2,
        max_backoff: float = 8.0,
        plan: bool = False,
    ) -> None:
        self.channel = channel
        self.timeout = timeout
        self._guard = PlanGuard(TITLE, plan)
        self._client = WebClient(
            token=token,
            base_url=base_url,
            timeout=timeout,  # type: ignore[arg-type]  # urllib takes a float; the annotation says int
            logger=_LOG,
            retry_handlers=[],  # retried here, by the policy every connector shares
        )
        self.policy = Backoff(attempts, backoff, max_backoff)

    @property
    def plan(self) -> bool:
        return self._guard.plan

    def _classify(self, exc: Exception) -> Failure | None:
        """Tried again: a 429 (after its Retry-After), a 5xx, a connection that failed or was
        reset. Not tried again: Slack's own errors (``ok: false``) and a read timeout."""
        timeout = f"no answer within {self.timeout}s"
        if isinstance(exc, SlackApiError):
            status = exc.response.status_code
            error = exc.response.data.get("error") if isinstance(exc.response.data, dict) else None
            detail = str(error or exc.response.data or "unknown error")[:300]
            retry_after = _header(exc.response.headers, "retry-after") or ("1" if status == 429 else None)
            return Failure(status, detail, status in RETRY_STATUSES, retry_after, status in NOT_ACTED_STATUSES)
        if isinstance(exc, TimeoutError):
            return Failure("timeout", timeout, again=False)
        if isinstance(exc, URLError):
            if isinstance(exc.reason, TimeoutError):
                return Failure("timeout", timeout, again=True, transient=False)
            return Failure("connection error", type(exc).__name__, again=True, transient=False)
        if isinstance(exc, (ConnectionResetError, ConnectionRefusedError, RemoteDisconnected)):
            return Failure("connection error", type(exc).__name__, again=True, transient=False)
        if isinstance(exc, (SlackClientError, OSError)):
            return Failure("connection error", type(exc).__name__, again=False)
        return None

    def _call(self, operation: str, asset: str, method: str, **kwargs: Any) -> dict[str, Any]:
        def call() -> Any:
            if method.startswith("chat."):
                return self._client.api_call(method, json=kwargs)
            return self._client.api_call(method, params=kwargs)

        response = with_retries(self.policy, TITLE, operation, asset, call, self._classify)
        data = response.data
        return data if isinstance(data, dict) else {}

    # -- reads -----------------------------------------------------------------------------
    def check(self) -> str:
        """``auth.test``: proves the token is valid and Slack reachable."""
        answer = self._call("auth.test", "workspace", "auth.test")
        return f"Slack workspace {answer.get('team', '?')} reachable as {answer.get('user', '?')}"

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """The parent message and its replies (``conversations.replies``); [] when the thread is gone."""
        _check_ts(ts)
        try:
            answer = self._call(
                "conversations.replies", f"channel {channel}", "conversations.replies", channel=channel, ts=ts
            )
        except ConnectorError as exc:
            if exc.detail in {"thread_not_found", "message_not_found"}:
                return []
            raise
        messages = answer.get("messages")
        return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []

    def find_reply(self, channel: str, thread_ts: str, event_type: str, payload: dict[str, Any]) -> str | None:
        """The ts of the newest reply in the thread whose metadata is ``event_type`` with
        ``payload`` among its payload (``conversations.replies`` with its metadata); None when
        there is none."""
        _check_ts(thread_ts)
        try:
            answer = self._call(
                "conversations.replies",
                f"channel {channel}",
                "conversations.replies",
                channel=channel,
                ts=thread_ts,
                include_all_metadata="true",
            )
        except ConnectorError as exc:
            if exc.detail in {"thread_not_found", "message_not_found"}:
                return None
            raise
        messages = answer.get("messages")
        listed = messages if isinstance(messages, list) else []
        replies = [m for m in listed if isinstance(m, dict) and m.get("ts") != thread_ts]  # the parent is listed too
        return _tagged(reversed(replies), event_type, payload)

    def find_posted(self, channel: str, event_type: str, payload: dict[str, Any], oldest: float) -> str | None:
        """The ts of the newest top-level message of ``channel`` (an id: Slack's history takes no
        name) posted after ``oldest`` (epoch seconds) whose metadata is ``event_type`` with
        ``payload`` among its payload; None when there is none (``conversations.history``, one
        page of 200: the messages since an interrupted post a moment ago)."""
        answer = self._call(
            "conversations.history",
            f"channel {channel}",
            "conversations.history",
            channel=channel,
            oldest=f"{oldest:.6f}",
            limit=200,
            include_all_metadata="true",
        )
        messages = answer.get("messages")
        return _tagged(
            [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else [], event_type, payload
        )

    # -- posts -----------------------------------------------------------------------------
    def post(
        self,
        text: str,
        blocks: list[dict[str, Any]],
        thread_ts: str | None = None,
        attachments: list[dict[str, Any]] | None = None,
        channel: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, str]:
        """Post a message (a reply when ``thread_ts`` is given); returns its channel and ts.
        ``metadata``: Slack's message metadata (``event_type``, ``event_payload``), for finding the
        message again (``find_posted``)."""
        target = channel or self.channel
        where = f"channel {target}"
        if thread_ts is not None:
            _check_ts(thread_ts)
        self._guard(
            "chat.postMessage",
            where,
            ("reply in thread " + thread_ts if thread_ts else "new message") + f": {text[:200]}",
        )
        args: dict[str, Any] = {
            "channel": target,
            "text": text,
            "blocks": blocks,
            "unfurl_links": False,
            "unfurl_media": False,
        }
        if thread_ts:
            args["thread_ts"] = thread_ts
        if attachments:
            args["attachments"] = attachments
        if metadata:
            args["metadata"] = metadata
        answer = self._call("chat.postMessage", where, "chat.postMessage", **args)
        return {"channel": str(answer.get("channel", target)), "ts": str(answer.get("ts", ""))}

    def update(
        self,
        channel: str,
        ts: str,
        text: str,
        blocks: list[dict[str, Any]],
        attachments: list[dict[str, Any]] | None = None,
    ) -> dict[str, str]:
        """Replace a message the bot posted earlier (``chat.update``; ``channel`` is the id Slack returned)."""
        _check_ts(ts)
        where = f"channel {channel}"
        self._guard("chat.update", where, f"update message {ts}: {text[:200]}")
        args: dict[str, Any] = {"channel": channel, "ts": ts, "text": text, "blocks": blocks}
        if attachments is not None:
            args["attachments"] = attachments
        answer = self._call("chat.update", where, "chat.update", **args)
        return {"channel": str(answer.get("channel", channel)), "ts": str(answer.get("ts", ts))}

    def open_dm(self, user: str) -> str:
        """The id of the direct-message channel with ``user`` (``conversations.open``)."""
        self._guard("conversations.open", f"user {user}", "open a direct message")
        answer = self._call("conversations.open", f"user {user}", "conversations.open", users=user)
        channel = answer.get("channel")
        channel_id = channel.get("id") if isinstance(channel, dict) else None
        if not isinstance(channel_id, str) or not CHANNEL_ID.match(channel_id):
            raise ConnectorError(TITLE, "conversations.open", f"user {user}", "ok", "Slack returned no channel id")
        return channel_id

    def post_ephemeral(self, channel: str, user: str, text: str, thread_ts: str | None = None) -> None:
        """A message only ``user`` sees (``chat.postEphemeral``): a refusal, say."""
        where = f"channel {channel}"
        self._guard("chat.postEphemeral", where, f"to {user}: {text[:200]}")
        args: dict[str, Any] = {"channel": channel, "user": user, "text": text}
        if thread_ts:
            _check_ts(thread_ts)
            args["thread_ts"] = thread_ts
        self._call("chat.postEphemeral", where, "chat.postEphemeral", **args)


def _check_ts(ts: str) -> None:
    if not TS.match(ts):
        raise ValueError(f"not a Slack message timestamp: {ts[:40]!r}")


SYSTEM = System(
    name="slack",
    title=TITLE,
    settings=SlackSettings,
    required=("token", "channel"),
    build=lambda s, o: SlackNotifier(
        secret(s.token), str(s.channel), s.base_url, timeout=o.timeout, plan=o.plan, **o.retry
    ),
    stand_in=StandIn.fake,
    url_field="base_url",
    example_change=lambda c: c.post(text="conformance", blocks=[]),
)


def _header(headers: Any, name: str) -> str | None:
    """A header's value from slack-sdk's response headers (a value may be a list)."""
    for key, value in dict(headers or {}).items():
        if str(key).lower() == name:
            return str(value[0] if isinstance(value, list) and value else value) or None
    return None


def _tagged(messages: Iterable[dict[str, Any]], event_type: str, payload: dict[str, Any]) -> str | None:
    """The ts of the first of ``messages`` whose metadata is ``event_type`` with ``payload``
    among its payload; None when there is none."""
    for message in messages:
        metadata = message.get("metadata")
        if not isinstance(metadata, dict) or metadata.get("event_type") != event_type:
            continue
        found = metadata.get("event_payload")
        ts = message.get("ts")
        if isinstance(found, dict) and all(found.get(k) == v for k, v in payload.items()) and isinstance(ts, str):
            return ts
    return None
