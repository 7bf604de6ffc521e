"""The webhook edge: authentication, limits, validation, persistence, dedup, secrets."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aisoar.config import PROJECT_ROOT, Settings
from aisoar.ingress.app import create_app
from aisoar.ingress.auth import signed_headers
from aisoar.ingress.dispatch import Dispatcher
from aisoar.ingress.webhooks import webhook_source
from aisoar.specs import load_specs
from aisoar.store import Store
from tasks import catalog
from tests.conftest import READ, WEBHOOK_SECRET
from tests.hostile import Recorder

SAMPLE = (PROJECT_ROOT / "examples/alerts/leaked-openai-key.json").read_bytes()
LEAKED = json.loads(SAMPLE)["entities"][0]["secret"]


@pytest.fixture()
def edge(settings: Settings) -> Iterator[tuple[TestClient, Store, Recorder]]:
    store = Store(settings.store_url)
    specs = [item.spec for item in load_specs(settings.specs_dir, catalog())]
    recorder = Recorder(store)
    dispatcher = Dispatcher(store, specs, recorder, timedelta(hours=1))
    with TestClient(create_app(settings, store, dispatcher)) as client:
        yield client, store, recorder


def post(client: TestClient, body: bytes, headers: dict[str, str] | None = None, source: str = "generic") -> Any:
    return client.post(
        f"/webhooks/{source}",
        content=body,
        headers=headers if headers is not None else signed_headers(WEBHOOK_SECRET, body),
    )


def wait_dispatched(client: TestClient, alert_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get(f"/alerts/{alert_id}", headers=READ).json()
        if status["status"] == "dispatched":
            return status
        time.sleep(0.02)
    raise AssertionError(f"alert {alert_id} was not dispatched")


def test_signed_alert_is_accepted_persisted_and_dispatched(edge: tuple[TestClient, Store, Recorder]) -> None:
    client, store, recorder = edge
    response = post(client, SAMPLE)
    assert response.status_code == 202, response.text
    alert_id = response.json()["alert_id"]
    status = wait_dispatched(client, alert_id)
    incident = store.get_incident(status["incident_id"])
    assert incident.alert_ids == [alert_id]
    assert incident.severity.value == "high" and incident.type is not None and incident.type.value == "api_abuse"
    assert recorder.launched == [(incident.id, "leaked-llm-api-key")]
    alert = store.get_alert(alert_id)
    assert alert.raw_sha256 == __import__("hashlib").sha256(SAMPLE).hexdigest()
    key = alert.entities[0]
    assert key.type == "llm_api_key" and key.fingerprint is not None
    assert key.fingerprint.last4 == LEAKED[-4:] and key.gateway_key_hash == key.fingerprint.sha256


AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS documentation example


def test_the_leaked_secret_is_never_stored(edge: tuple[TestClient, Store, Recorder], settings: Settings) -> None:
    client, store, _ = edge
    body = json.loads(SAMPLE)
    body["description"] = f"found {LEAKED} in config; also aws_secret_access_key={AWS_SECRET} (AKIAABCDEFGHIJKLMNOP)"
    raw = json.dumps(body).encode()
    alert_id = post(client, raw).json()["alert_id"]
    wait_dispatched(client, alert_id)
    stored = store.get_alert(alert_id).model_dump_json()
    assert LEAKED not in stored and AWS_SECRET not in stored
    assert "AKIAABCDEFGHIJKLMNOP" in stored  # an access key id is an identifier, kept for containment
    assert "[redacted secret" in stored
    for path in settings.data_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert LEAKED.encode() not in content, path
            assert LEAKED[8:40].encode() not in content, path


def test_bad_signature_is_refused(edge: tuple[TestClient, Store, Recorder]) -> None:
    client, store, _ = edge
    response = post(client, SAMPLE, signed_headers("wrong-secret", SAMPLE))
    assert response.status_code == 401
    assert "signature does not match" in response.json()["detail"]
    assert store.pending_alerts() == []


def test_expired_timestamp_is_refused(edge: tuple[TestClient, Store, Recorder]) -> None:
    client, _, _ = edge
    old = signed_headers(WEBHOOK_SECRET, SAMPLE, timestamp=int(time.time()) - 301)
    response = post(client, SAMPLE, old)
    assert response.status_code == 401 and "outside the 300s window" in response.json()["detail"]


def test_missing_headers_are_refused(edge: tuple[TestClient, Store, Recorder]) -> None:
    client, _, _ = edge
    response = post(client, SAMPLE, {"Content-Type": "application/json"})
    assert response.status_code == 401 and "missing" in response.json()["detail"]


def test_replayed_request_stores_nothing_new(edge: tuple[TestClient, Store, Recorder]) -> None:
    client, _, recorder = edge
    headers = signed_headers(WEBHOOK_SECRET, SAMPLE)
    first = post(client, SAMPLE, headers)
    second = post(client, SAMPLE, headers)
    assert first.status_code == 202
    assert second.status_code == 200
    alert_id = first.json()["alert_id"]
    assert second.json() == {"status": "duplicate", "alert_id": alert_id, "alert_ids": [alert_id]}
    wait_dispatched(client, first.json()["alert_id"])
    assert len(recorder.launched) == 1


def test_the_same_alert_sent_twice_joins_one_incident(edge: tuple[TestClient, Store, Recorder]) -> None:
    client, store, recorder = edge
    first = wait_dispatched(client, post(client, SAMPLE).json()["alert_id"])
    time.sleep(1.01)  # a new timestamp: a new, separately signed delivery
    second = wait_dispatched(client, post(client, SAMPLE).json()["alert_id"])
    assert first["incident_id"] == second["incident_id"]
    assert len(store.get_incident(first["incident_id"]).alert_ids) == 2
    assert len(recorder.launched) == 1


def test_oversized_body_is_refused(edge: tuple[TestClient, Store, Recorder], settings: Settings) -> None:
    client, _, _ = edge
    body = json.dumps({"id": "x", "title": "t", "description": "a" * settings.ingress_max_body_bytes}).encode()
    response = post(client, body)
    assert response.status_code == 413
    assert str(settings.ingress_max_body_bytes) in response.json()["error"]


def test_malformed_json_is_a_400(edge: tuple[TestClient, Store, Recorder]) -> None:
    client, _, _ = edge
    response = post(client, b'{"id": "x", "title": ')
    assert response.status_code == 400 and "not valid JSON" in response.json()["detail"]


def test_schema_errors_are_a_422_that_never_echo_the_input(edge: tuple[TestClient, Store, Recorder]) -> None:
    client, _, _ = edge
    body = json.dumps(
        {
            "id": "x",
            "title": "t",
            "severity": "apocalyptic",
            "entities": [{"type": "llm_api_key", "provider": "openai", "secret": LEAKED, "key_sha256": "not-a-hash"}],
        }
    ).encode()
    response = post(client, body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    locations = {".".join(map(str, d["loc"])) for d in detail}
    assert {"severity", "entities.0.key_sha256"} <= locations
    assert LEAKED not in response.text and "apocalyptic" not in response.text


def test_unknown_source_is_a_404(edge: tuple[TestClient, Store, Recorder]) -> None:
    client, _, _ = edge
    response = post(client, SAMPLE, source="nope")
    assert response.status_code == 404 and response.json()["error"] == "no source by that name"
    assert "generic" not in response.text  # configured sources are not listed to strangers


def test_webhook_paths_outside_the_route_are_answered_as_the_router_answers(
    edge: tuple[TestClient, Store, Recorder],
) -> None:
    """The webhook's fast path takes exactly what the route ``/webhooks/{source_name}`` takes."""
    client, store, _ = edge
    assert webhook_source("/webhooks/generic") == "generic"
    assert [webhook_source(p) for p in ("/webhooks/", "/webhooks/a/b", "/webhook/a", "/x/webhooks/a")] == [None] * 4
    assert client.get("/webhooks/generic").status_code == 405
    assert client.post("/webhooks/", content=SAMPLE).status_code == 404
    assert (
        client.post(
            "/webhooks/generic/more", content=SAMPLE, headers=signed_headers(WEBHOOK_SECRET, SAMPLE)
        ).status_code
        == 404
    )
    assert store.pending_count() == 0


class BrokenInbox(Store):
    def accept_alerts(self, items: Any) -> Any:
        raise RuntimeError("the disk is on fire")


def test_an_unexpected_error_on_the_webhook_is_a_500_with_a_reference(settings: Settings) -> None:
    store = BrokenInbox(settings.store_url)
    specs = [item.spec for item in load_specs(settings.specs_dir, catalog())]
    dispatcher = Dispatcher(store, specs, Recorder(store), timedelta(hours=1))
    with TestClient(create_app(settings, store, dispatcher), raise_server_exceptions=False) as client:
        response = post(client, SAMPLE)
    assert response.status_code == 500
    assert response.json()["error"].startswith("internal error (reference ")
    assert "fire" not in response.text


def test_accepted_alerts_survive_a_restart(settings: Settings, tmp_path: Path) -> None:
    """An alert persisted before a crash is dispatched when the ingress starts again."""
    store = Store(settings.store_url)
    from aisoar.ingress.adapters import generic_json

    alert = generic_json("generic", SAMPLE)
    store.accept_alert(alert, "delivery-1")
    specs = [item.spec for item in load_specs(settings.specs_dir, catalog())]
    recorder = Recorder(store)
    with TestClient(create_app(settings, store, Dispatcher(store, specs, recorder, timedelta(hours=1)))):
        pass
    status = store.alert_status(alert.id)
    assert status is not None and status[0] == "dispatched"
    assert len(recorder.launched) == 1
