"""Slack Web API through slack-sdk's WebClient (base URL configurable for the sandbox)."""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from connectors.errors import ConnectorError

SYSTEM = "Slack"


class SlackNotifier:
    def __init__(self, token: str, channel: str, base_url: str, timeout: float = 10.0) -> None:
        self.channel = channel
        self._client = WebClient(token=token, base_url=base_url, timeout=int(timeout))

    def post(self, text: str, blocks: list[dict[str, Any]], thread_ts: str | None = None) -> dict[str, str]:
        """Post a message; returns its channel and ts."""
        try:
            response = self._client.chat_postMessage(
                channel=self.channel,
                text=text,
                blocks=blocks,
                thread_ts=thread_ts,
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as exc:
            raise ConnectorError(
                SYSTEM,
                "chat.postMessage",
                f"channel {self.channel}",
                exc.response.status_code,
                str(exc.response.get("error", "unknown error")),
            ) from None
        except (SlackClientError, OSError) as exc:
            raise ConnectorError(
                SYSTEM, "chat.postMessage", f"channel {self.channel}", None, type(exc).__name__
            ) from None
        return {"channel": str(response["channel"]), "ts": str(response["ts"])}
