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
import time
from http.client import RemoteDisconnected
from typing import Any
from urllib.error import URLError

from pydantic import Field, SecretStr
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    RetryHandler,
    RetryIntervalCalculator,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from connectors.errors import ConnectorError, PlanGuard
from connectors.retry import RETRY_STATUSES, Backoff
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


class _Interval(RetryIntervalCalculator):
    def __init__(self, policy: Backoff) -> None:
        self.policy = policy

    def calculate_sleep_duration(self, current_attempt: int) -> float:
        return self.policy.delay(current_attempt + 1)


class _RateLimited(RateLimitErrorRetryHandler):
    """slack-sdk's 429 handler, with the Retry-After wait capped by the shared policy."""

    def __init__(self, max_retry_count: int, policy: Backoff) -> None:
        super().__init__(max_retry_count=max_retry_count, interval_calculator=_Interval(policy))
        self.policy = policy

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        if response is None:
            raise error or RuntimeError("rate limited without a response")
        header = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), None)
        retry_after = (header[0] if isinstance(header, list) and header else header) or "1"
        state.next_attempt_requested = True
        time.sleep(self.policy.delay(state.current_attempt + 1, str(retry_after)))
        state.increment_current_attempt()


class _ServerError(RetryHandler):
    """Retries 500/502/503/504 (slack-sdk's ServerErrorRetryHandler covers 500 and 503 only)."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code in RETRY_STATUSES - {429}


def retry_handlers(attempts: int, policy: Backoff) -> list[RetryHandler]:
    retries = max(0, attempts - 1)
    return [
        _RateLimited(retries, policy),
        _ServerError(max_retry_count=retries, interval_calculator=_Interval(policy)),
        # A refused or reset connection never reached Slack: safe to try again.
        ConnectionErrorRetryHandler(
            max_retry_count=retries,
            interval_calculator=_Interval(policy),
            error_types=[URLError, ConnectionResetError, ConnectionRefusedError, RemoteDisconnected],
        ),
    ]


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
            retry_handlers=retry_handlers(attempts, Backoff(attempts, backoff, max_backoff)),
        )

    @property
    def plan(self) -> bool:
        return self._guard.plan

    def _call(self, operation: str, asset: str, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = (
                self._client.api_call(method, json=kwargs)
                if method.startswith("chat.")
                else (self._client.api_call(method, params=kwargs))
            )
        except SlackApiError as exc:
            status = exc.response.status_code
            error = exc.response.data.get("error") if isinstance(exc.response.data, dict) else None
            detail = str(error or exc.response.data or "unknown error")[:300]
            raise ConnectorError(TITLE, operation, asset, status, detail) from None
        except TimeoutError:
            raise ConnectorError(TITLE, operation, asset, "timeout", f"no answer within {self.timeout}s") from None
        except URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise ConnectorError(TITLE, operation, asset, "timeout", f"no answer within {self.timeout}s") from None
            raise ConnectorError(TITLE, operation, asset, "connection error", type(exc).__name__) from None
        except (SlackClientError, OSError) as exc:
            raise ConnectorError(TITLE, operation, asset, "connection error", type(exc).__name__) from None
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

    # -- posts -----------------------------------------------------------------------------
    def post(
        self,
        text: str,
        blocks: list[dict[str, Any]],
        thread_ts: str | None = None,
        attachments: list[dict[str, Any]] | None = None,
        channel: str | None = None,
    ) -> dict[str, str]:
        """Post a message (a reply when ``thread_ts`` is given); returns its channel and ts."""
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
    stand_in_note="sandbox fake driven by slack-sdk",
    url_field="base_url",
    example_change=lambda c: c.post(text="conformance", blocks=[]),
)
