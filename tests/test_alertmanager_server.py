"""The real Prometheus Alertmanager (tests/servers/alertmanager.py) delivers to a webhook the
way aisoar's ingress will receive it: these tests pin down what it really sends (method,
headers, the version 4 body) for a firing alert and for its resolution."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.servers.alertmanager import Alertmanager, alert, alertmanager
from tests.servers.process import log_tail

DELIVERY_TIMEOUT = 15.0
TOKEN = "am-webhook-token-0123456789"
LABELS = {
    "alertname": "LeakedLLMKey",
    "severity": "critical",
    "incident_type": "api_abuse",
    "llm_provider": "openai",
    "key_id": "key_x",
}
ANNOTATIONS = {
    "summary": "OpenAI key key_x leaked",
    "description": "The OpenAI API key key_x was found in a public repository and is being used.",
}


@dataclass(frozen=True)
class Delivery:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


class Receiver:
    """A loopback HTTP server that records every request and answers 200."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._changed:
                    receiver.deliveries.append(Delivery(self.command, self.path, dict(self.headers.items()), body))
                    receiver._changed.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/alertmanager"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="am-receiver", daemon=True
        )
        self._thread.start()

    def wait_for(self, count: int, timeout: float = DELIVERY_TIMEOUT) -> list[Delivery]:
        """The first ``count`` deliveries, waiting at most ``timeout`` seconds for them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.deliveries) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return list(self.deliveries)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def wait_deliveries(receiver: Receiver, am: Alertmanager, count: int, secret: str) -> list[Delivery]:
    deliveries = receiver.wait_for(count)
    if len(deliveries) < count:
        pytest.fail(
            f"Alertmanager made {len(deliveries)} deliveries, not {count}, within {DELIVERY_TIMEOUT}s;"
            f" it holds {am.alerts()}; its log:\n{log_tail(am.workdir / 'alertmanager.log', redact=(secret,))}"
        )
    return deliveries


def check_fire_and_resolve(receiver: Receiver, am: Alertmanager, authorization: str, secret: str) -> None:
    alerts = [alert(LABELS, ANNOTATIONS, generator_url="http://127.0.0.1:9090/graph?g0.expr=leaked_key")]
    am.post_alerts(alerts)
    [firing] = wait_deliveries(receiver, am, 1, secret)

    assert firing.method == "POST"
    assert firing.path == "/hooks/alertmanager"
    assert firing.headers["Authorization"] == authorization
    assert firing.headers["User-Agent"].startswith("Alertmanager/")
    assert firing.headers["Content-Type"] == "application/json"
    body = firing.json()
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "aisoar"
    assert body["externalURL"] == am.url
    assert body["groupKey"]
    assert body["commonLabels"] == LABELS
    assert body["commonAnnotations"] == ANNOTATIONS
    assert body["groupLabels"] == LABELS  # group_by: ['...'] groups by every label
    [sent] = body["alerts"]
    assert sent["status"] == "firing"
    assert sent["labels"] == LABELS
    assert sent["annotations"] == ANNOTATIONS
    assert sent["fingerprint"]
    assert sent["endsAt"] == "0001-01-01T00:00:00Z"
    assert sent["startsAt"].startswith(alerts[0]["startsAt"][:19])
    assert sent["generatorURL"] == alerts[0]["generatorURL"]

    am.resolve(alerts)
    deliveries = wait_deliveries(receiver, am, 2, secret)
    resolved = deliveries[1]
    assert resolved.headers["Authorization"] == authorization
    rbody = resolved.json()
    assert rbody["version"] == "4"
    assert rbody["status"] == "resolved"
    assert rbody["groupKey"] == body["groupKey"]
    [gone] = rbody["alerts"]
    assert gone["status"] == "resolved"
    assert gone["fingerprint"] == sent["fingerprint"]
    assert gone["endsAt"] != "0001-01-01T00:00:00Z"
    assert gone["startsAt"] == sent["startsAt"]


def test_alertmanager_delivers_firing_then_resolved_with_bearer_token(receiver: Receiver) -> None:
    with alertmanager(receiver.url, bearer_token=TOKEN) as am:
        check_fire_and_resolve(receiver, am, f"Bearer {TOKEN}", TOKEN)


def test_alertmanager_delivers_with_basic_auth(receiver: Receiver) -> None:
    user, password = "aisoar", "am-basic-password-0123"
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    with alertmanager(receiver.url, basic_auth=(user, password)) as am:
        check_fire_and_resolve(receiver, am, expected, password)
