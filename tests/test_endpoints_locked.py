"""Every endpoint of aisoar's ingress refuses a caller without credentials: each route the app
serves is listed here with what it answers a stranger, and a new route fails this test until
it is added (and locked). Only the liveness probe is open, and it says nothing but "ok"."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Route

from aisoar.ingress.app import create_app
from aisoar.ingress.dispatch import Dispatcher
from aisoar.store import Store
from tests.conftest import make_settings

# route -> (a stranger's request path, the status a stranger gets)
LOCKED = {
    ("POST", "/webhooks/{source_name}"): ("/webhooks/generic", 401),
    ("GET", "/alerts/{alert_id}"): ("/alerts/ALR-20261203-000000000000", 401),
    ("GET", "/metrics"): ("/metrics", 401),
    ("POST", "/slack/interactivity"): ("/slack/interactivity", 401),
}
OPEN = {("GET", "/healthz")}


class NoClicks:
    def record_click(self, click: object) -> None:
        raise AssertionError("a click without a valid signature reached the desk")


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "data", slack_signing_secret="test-signing-secret-0123456789ab")
    store = Store(settings.store_url)
    app = create_app(settings, store, Dispatcher(store, [], None, timedelta(hours=1)), desk=NoClicks())  # type: ignore[arg-type]
    with TestClient(app) as test_client:
        yield test_client


def test_every_route_is_locked_or_known_to_be_open(client: TestClient) -> None:
    served = {
        (method, route.path)
        for route in client.app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route)  # FastAPI's routes and the plain webhook route
        for method in route.methods
    }
    assert served == set(LOCKED) | OPEN, "a route was added or removed: say here what it answers a stranger"


@pytest.mark.parametrize(("route", "expected"), sorted(LOCKED.items()))
def test_a_stranger_is_refused(client: TestClient, route: tuple[str, str], expected: tuple[str, int]) -> None:
    method, _ = route
    path, status = expected
    body = b'{"title": "x"}' if path.startswith("/webhooks") else b"payload=%7B%7D"
    headers = {
        "content-type": "application/json" if path.startswith("/webhooks") else "application/x-www-form-urlencoded"
    }
    answer = client.request(method, path, content=body if method == "POST" else None, headers=headers)
    assert answer.status_code == status, answer.text


def test_the_probe_says_nothing_else(client: TestClient) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_a_malformed_slack_timestamp_is_refused_not_an_error(client: TestClient) -> None:
    for stamp in ("abc", "1" * 40, "-5"):
        answer = client.post(
            "/slack/interactivity",
            content=b"payload=%7B%7D",
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "x-slack-request-timestamp": stamp,
                "x-slack-signature": "v0=" + "0" * 64,
            },
        )
        assert answer.status_code == 401, (stamp, answer.text)
