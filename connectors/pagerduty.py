"""PagerDuty Events API v2: trigger, acknowledge and resolve an alert by its dedup key.

The dedup key is the incident id, so paging twice for one incident updates one PagerDuty
alert instead of opening a second.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import SecretStr

from connectors.system import StandIn, System, SystemSettings, secret
from connectors.transport import HttpApi

TITLE = "PagerDuty"


class PagerDutySettings(SystemSettings):
    url: str = "https://events.pagerduty.com"
    routing_key: SecretStr | None = None
PagerSeverity = Literal["critical", "error", "warning", "info"]


class PagerDutyEvents:
    def __init__(self, base_url: str, routing_key: str, timeout: float = 10.0, **retry: Any) -> None:
        self._routing_key = routing_key
        self._api = HttpApi(TITLE, base_url, {}, timeout=timeout, **retry)

    def close(self) -> None:
        self._api.close()

    def _enqueue(self, action: str, dedup_key: str, **extra: Any) -> str:
        body: dict[str, Any] = {"routing_key": self._routing_key, "event_action": action, "dedup_key": dedup_key}
        body.update(extra)
        response = self._api.request("POST", "/v2/enqueue", f"{action} event", dedup_key, ok=(202,), json=body)
        answer = response.json()
        return str(answer.get("dedup_key", dedup_key)) if isinstance(answer, dict) else dedup_key

    def check(self) -> str:
        """The Events API has no read: acknowledge a dedup key no alert has, which PagerDuty
        accepts (202) for a valid routing key and ignores."""
        self._api.request(
            "POST",
            "/v2/enqueue",
            "check routing key",
            "routing key",
            ok=(202,),
            json={"routing_key": self._routing_key, "event_action": "acknowledge", "dedup_key": "aisoar-check"},
            changes=False,
        )
        return "PagerDuty Events API accepts the routing key"

    def trigger(self, dedup_key: str, summary: str, source: str, severity: PagerSeverity, link: str | None) -> str:
        payload = {"summary": summary[:1024], "source": source[:255], "severity": severity}
        links = [{"href": link, "text": "Playbook run in the Prefect UI"}] if link else []
        return self._enqueue("trigger", dedup_key, payload=payload, links=links)

    def acknowledge(self, dedup_key: str) -> str:
        return self._enqueue("acknowledge", dedup_key)

    def resolve(self, dedup_key: str) -> str:
        return self._enqueue("resolve", dedup_key)


SYSTEM = System(
    name="pagerduty",
    title=TITLE,
    settings=PagerDutySettings,
    required=("routing_key",),
    build=lambda s, o: PagerDutyEvents(s.url, secret(s.routing_key), timeout=o.timeout, plan=o.plan, **o.retry),
    stand_in=StandIn.fake,
    example_change=lambda c: c.trigger("INC-0", "conformance", "aisoar", "info", None),
)
