"""Detection sources at the edge: each source's real payload shape, its authentication (good,
bad, rotated), the network and rate limits, the read endpoints, and a new source added by one
mapping file. The launcher records what it would start (no Prefect here); the end-to-end runs
are in test_sources_e2e.py."""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aisoar.config import PROJECT_ROOT, Settings
from aisoar.ingress.app import create_app
from aisoar.ingress.auth import github_signature, signed_headers
from aisoar.ingress.dispatch import Dispatcher
from aisoar.ingress.sources import SourceError, load_sources
from aisoar.specs import load_specs
from aisoar.store import Store
from cli.main import main
from tasks import catalog
from tests.conftest import API_TOKEN, READ, WEBHOOK_SECRET, make_settings
from tests.hostile import Recorder

EXAMPLES = PROJECT_ROOT / "examples" / "sources"
SECRETS = {
    "source_alertmanager_secret": "am-token-0123456789",
    "source_github_secret": "gh-secret-0123456789",
    "source_ocsf_secret": "ocsf-token-0123456789",
    "source_llm_guard_secret": "llm-guard-key-0123456789",
    "source_litellm_guardrail_secret": "litellm-token-0123456789",
    "source_falco_secret": "falco-token-0123456789",
}


class Edge:
    def __init__(self, client: TestClient, store: Store, recorder: Recorder) -> None:
        self.client, self.store, self.recorder = client, store, recorder

    def post(self, source: str, body: bytes, headers: dict[str, str]) -> Any:
        return self.client.post(f"/webhooks/{source}", content=body, headers=headers)

    def wait_dispatched(self, alert_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 5
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.client.get(f"/alerts/{alert_id}", headers=READ).json()
            if status.get("status") == "dispatched":
                return status
            time.sleep(0.02)
        raise AssertionError(f"not dispatched: {status}")


def edge_for(settings: Settings) -> Iterator[Edge]:
    store = Store(settings.store_url)
    specs = [item.spec for item in load_specs(settings.specs_dir, catalog())]
    recorder = Recorder(store)
    with TestClient(create_app(settings, store, Dispatcher(store, specs, recorder, timedelta(hours=1)))) as client:
        yield Edge(client, store, recorder)


@pytest.fixture()
def edge(tmp_path: Path) -> Iterator[Edge]:
    yield from edge_for(make_settings(tmp_path / "data", **SECRETS))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def example(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


def gh_headers(body: bytes, secret: str = SECRETS["source_github_secret"], event: str = "secret_scanning_alert") -> Any:
    return {
        "X-Hub-Signature-256": github_signature(secret, body),
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": f"guid-{hash(body)}",
        "Content-Type": "application/json",
    }


# -- Alertmanager ------------------------------------------------------------------------


def test_alertmanager_one_incident_per_alert_and_resolved_never_starts_a_playbook(edge: Edge) -> None:
    delivery = json.loads(example("alertmanager-leaked-key.json"))
    second = json.loads(json.dumps(delivery["alerts"][0]))
    second["labels"] |= {"key_id": "key_other", "alertname": "LeakedLLMKey"}
    second["fingerprint"] = "bb14e021fa3d0042"
    delivery["alerts"].append(second)
    body = json.dumps(delivery).encode()
    token = SECRETS["source_alertmanager_secret"]
    response = edge.post("alertmanager", body, bearer(token))
    assert response.status_code == 202, response.text
    ids = response.json()["alert_ids"]
    assert len(ids) == 2
    incidents = {edge.wait_dispatched(i)["incident_id"] for i in ids}
    assert len(incidents) == 2
    assert sorted(p for _, p in edge.recorder.launched) == ["leaked-llm-api-key", "leaked-llm-api-key"]
    # The same delivery again (Alertmanager repeats a group): nothing new.
    again = edge.post("alertmanager", body, bearer(token))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"

    delivery["status"] = "resolved"
    for item in delivery["alerts"]:
        item["status"] = "resolved"
        item["endsAt"] = "2026-12-03T07:00:00Z"
    resolved = edge.post("alertmanager", json.dumps(delivery).encode(), bearer(token))
    assert resolved.status_code == 202
    for alert_id in resolved.json()["alert_ids"]:
        status = edge.wait_dispatched(alert_id)
        assert status["incident_id"] in incidents
    assert len(edge.recorder.launched) == 2  # no new run
    assert {incident for incident, _ in edge.recorder.told} == incidents
    assert all("is resolved (aisoar's containment" in message for _, message in edge.recorder.told)


def test_a_resolution_with_no_incident_opens_none(edge: Edge) -> None:
    delivery = json.loads(example("alertmanager-leaked-key.json"))
    delivery["alerts"][0]["status"] = "resolved"
    response = edge.post("alertmanager", json.dumps(delivery).encode(), bearer(SECRETS["source_alertmanager_secret"]))
    status = edge.wait_dispatched(response.json()["alert_id"])
    assert status["incident_id"] is None and "no open incident" in status["error"]
    assert edge.recorder.launched == []


def test_alertmanager_basic_auth(tmp_path: Path) -> None:
    folder = tmp_path / "sources"
    folder.mkdir()
    (folder / "am-basic.yaml").write_text(
        "name: am-basic\nformat: alertmanager\nauth: {scheme: basic, username: alertmanager}\n"
    )
    settings = make_settings(tmp_path / "data", sources_dir=folder, source_am_basic_secret="pw-0123456789")
    body = example("alertmanager-leaked-key.json")
    for edge in edge_for(settings):
        good = base64.b64encode(b"alertmanager:pw-0123456789").decode()
        wrong_user = base64.b64encode(b"mallory:pw-0123456789").decode()
        headers = {"Content-Type": "application/json"}
        assert edge.post("am-basic", body, {**headers, "Authorization": f"Basic {wrong_user}"}).status_code == 401
        assert edge.post("am-basic", body, {**headers, "Authorization": "Basic !!!"}).status_code == 401
        assert edge.post("am-basic", body, {**headers, "Authorization": f"Basic {good}"}).status_code == 202


# -- GitHub secret scanning --------------------------------------------------------------


def test_github_ping_and_other_events_are_acknowledged_and_not_stored(edge: Edge) -> None:
    ping = example("github-ping.json")
    response = edge.post("github", ping, gh_headers(ping, event="ping"))
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    push = edge.post("github", ping, gh_headers(ping, event="push"))
    assert push.status_code == 200 and "secret_scanning_alert" in push.json()["detail"]
    assert edge.store.pending_alerts() == []


@pytest.mark.parametrize(
    ("action", "severity", "state"),
    [
        ("created", "high", "firing"),
        ("reopened", "high", "firing"),
        ("validated", "high", "firing"),
        ("publicly_leaked", "critical", "firing"),
        ("resolved", "info", "resolved"),
    ],
)
def test_github_actions_map_as_github_documents_them(edge: Edge, action: str, severity: str, state: str) -> None:
    payload = json.loads(example("github-secret-scanning-created.json"))
    payload["action"] = action
    body = json.dumps(payload).encode()
    response = edge.post("github", body, gh_headers(body))
    assert response.status_code == 202, response.text
    alert = edge.store.get_alert(response.json()["alert_id"])
    assert (alert.severity.value, alert.state) == (severity, state)
    [key] = alert.entities
    assert key.type == "llm_api_key" and key.provider == "openai" and key.key_id is None
    assert any("does not carry the secret" in note for note in alert.notes)


def test_github_signature_rotation_and_refusal(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "data", source_github_secret="new-secret-0123", source_github_secret_previous="old-secret-0123"
    )
    body = example("github-secret-scanning-created.json")
    for edge in edge_for(settings):
        assert edge.post("github", body, gh_headers(body, "new-secret-0123")).status_code == 202
        other = body.replace(b'"number": 42', b'"number": 43')
        assert edge.post("github", other, gh_headers(other, "old-secret-0123")).status_code == 202
        third = body.replace(b'"number": 42', b'"number": 44')
        refused = edge.post("github", third, gh_headers(third, "someone-else"))
        assert refused.status_code == 401
        assert "old-secret" not in refused.text and "new-secret" not in refused.text
        unsigned = edge.post("github", third, {"X-GitHub-Event": "secret_scanning_alert"})
        assert unsigned.status_code == 401


# -- OCSF, guardrails, and a source by mapping only ----------------------------------------


@pytest.mark.parametrize(
    ("source", "file", "headers", "incident_type", "entities", "playbook"),
    [
        (
            "ocsf",
            "ocsf-jailbreak-finding.json",
            bearer(SECRETS["source_ocsf_secret"]),
            "jailbreak",
            {"model", "session", "user"},
            "jailbreak-campaign",
        ),
        (
            "llm-guard",
            "llm-guard-prompt-injection.json",
            {"X-Api-Key": SECRETS["source_llm_guard_secret"], "Content-Type": "application/json"},
            "direct_prompt_injection",
            {"session", "user", "model"},
            "jailbreak-campaign",
        ),
        (
            "litellm-guardrail",
            "litellm-guardrail-blocked.json",
            bearer(SECRETS["source_litellm_guardrail_secret"]),
            "direct_prompt_injection",
            {"llm_api_key", "user", "session", "model"},
            "jailbreak-campaign",
        ),
    ],
)
def test_findings_map_to_typed_alerts_with_their_entities_and_playbook(
    edge: Edge, source: str, file: str, headers: dict[str, str], incident_type: str, entities: set[str], playbook: str
) -> None:
    response = edge.post(source, example(file), headers)
    assert response.status_code == 202, response.text
    alert = edge.store.get_alert(response.json()["alert_id"])
    assert alert.incident_type is not None and alert.incident_type.value == incident_type
    assert {e.type for e in alert.entities} == entities
    edge.wait_dispatched(alert.id)
    assert [p for _, p in edge.recorder.launched] == [playbook]


def test_a_guardrail_pass_is_not_a_finding(edge: Edge) -> None:
    passed = json.loads(example("llm-guard-prompt-injection.json")) | {"is_valid": True}
    headers = {"X-Api-Key": SECRETS["source_llm_guard_secret"], "Content-Type": "application/json"}
    response = edge.post("llm-guard", json.dumps(passed).encode(), headers)
    assert response.status_code == 200 and response.json()["status"] == "ignored"


def test_a_new_json_source_is_one_mapping_file(tmp_path: Path) -> None:
    folder = tmp_path / "sources"
    folder.mkdir()
    (folder / "acme-dlp.yaml").write_text(
        """
name: acme-dlp
auth: {scheme: header, header: X-Acme-Token}
mapping:
  id: "{event.id}"
  title: "Acme DLP: {event.rule} on {event.app}"
  severity: {from: ["{event.level}"], map: {"5": critical, "4": high, "3": medium}, default: low}
  type: data_leakage
  labels: {app: "{event.app}"}
  entities:
    - type: user
      fields: {user_id: "{event.user}"}
    - type: model
      fields: {name: "{event.model}"}
"""
    )
    settings = make_settings(tmp_path / "data", sources_dir=folder, source_acme_dlp_secret="acme-0123456789")
    body = json.dumps(
        {"event": {"id": "e-1", "rule": "PII in output", "app": "support", "level": 5, "user": "u-7", "model": "m"}}
    ).encode()
    for edge in edge_for(settings):
        response = edge.post("acme-dlp", body, {"X-Acme-Token": "acme-0123456789", "Content-Type": "application/json"})
        assert response.status_code == 202, response.text
        alert = edge.store.get_alert(response.json()["alert_id"])
        assert (alert.title, alert.severity.value, alert.incident_type) == (
            "Acme DLP: PII in output on support",
            "critical",
            "data_leakage",
        )
        assert {e.key for e in alert.entities} == {"user:u-7", "model:m"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name: Bad Name\nformat: generic\n", "name"),
        ("name: x\nformat: nope\n", "unknown format 'nope'"),
        ("name: x\nformat: generic\nauth: {scheme: basic}\n", "needs a username"),
        ("name: x\nmapping: {id: '{a..b}', title: t}\n", "is not a path"),
        ("name: x\nmapping: {id: '{a}', title: t, severity: urgent}\n", "severity can only be one of"),
        ("name: x\nmapping: {id: '{a}', title: t, entities: [{type: model, fields: {colour: '{c}'}}]}\n", "no field"),
        ("name: x\nformat: generic\nallow_from: [not-a-network]\n", "allow_from"),
    ],
)
def test_a_wrong_source_file_is_refused_at_start_naming_the_file(tmp_path: Path, text: str, says: str) -> None:
    folder = tmp_path / "sources"
    folder.mkdir()
    (folder / "x.yaml").write_text(text)
    with pytest.raises(SourceError) as raised:
        load_sources(make_settings(tmp_path / "data", sources_dir=folder))
    assert str(folder / "x.yaml") in str(raised.value) and says in str(raised.value)


# -- the edge's own rules ----------------------------------------------------------------


def test_a_source_without_its_secret_says_which_setting_is_missing(tmp_path: Path) -> None:
    for edge in edge_for(make_settings(tmp_path / "data")):
        response = edge.post("alertmanager", b"{}", bearer("anything"))
        assert response.status_code == 404
        assert response.json()["detail"] == "its secret is not set: set AISOAR_SOURCE_ALERTMANAGER_SECRET"


def test_allowlist_rate_limit_and_content_type(tmp_path: Path) -> None:
    folder = tmp_path / "sources"
    folder.mkdir()
    shutil.copy(PROJECT_ROOT / "sources" / "generic.yaml", folder / "generic.yaml")
    (folder / "walled.yaml").write_text("name: walled\nformat: generic\nallow_from: [10.0.0.0/8]\n")
    (folder / "slow.yaml").write_text("name: slow\nformat: generic\nrate_limit_per_minute: 2\n")
    settings = make_settings(
        tmp_path / "data", sources_dir=folder, source_walled_secret="w-0123456789", source_slow_secret="s-0123456789"
    )
    body = (PROJECT_ROOT / "examples/alerts/leaked-openai-key.json").read_bytes()
    for edge in edge_for(settings):
        # TestClient's peer is "testclient", not in 10.0.0.0/8.
        assert edge.post("walled", body, signed_headers("w-0123456789", body)).status_code == 403
        # One delivery sent three times (headers signed once: a second signed later is a new delivery).
        delivery = signed_headers("s-0123456789", body)
        answers = [edge.post("slow", body, delivery) for _ in range(3)]
        assert [a.status_code for a in answers] == [202, 200, 429]
        assert int(answers[2].headers["Retry-After"]) >= 1
        plain = {**signed_headers(WEBHOOK_SECRET, body), "Content-Type": "text/plain"}
        assert edge.post("generic", body, plain).status_code == 415


def test_a_stranger_cannot_use_up_the_senders_rate_limit(tmp_path: Path) -> None:
    folder = tmp_path / "sources"
    folder.mkdir()
    (folder / "slow.yaml").write_text("name: slow\nformat: generic\nrate_limit_per_minute: 2\n")
    settings = make_settings(tmp_path / "data", sources_dir=folder, source_slow_secret="s-0123456789")
    body = (PROJECT_ROOT / "examples/alerts/leaked-openai-key.json").read_bytes()
    for edge in edge_for(settings):
        forged = [edge.post("slow", body, signed_headers("guessed-secret", body)).status_code for _ in range(3)]
        assert forged == [401, 401, 429]
        assert edge.post("slow", body, signed_headers("s-0123456789", body)).status_code == 202


def test_read_endpoints_need_credentials(edge: Edge) -> None:
    body = (PROJECT_ROOT / "examples/alerts/leaked-openai-key.json").read_bytes()
    alert_id = edge.post("generic", body, signed_headers(WEBHOOK_SECRET, body)).json()["alert_id"]
    assert edge.client.get(f"/alerts/{alert_id}").status_code == 401
    assert edge.client.get(f"/alerts/{alert_id}", headers={"Authorization": "Bearer wrong"}).status_code == 401
    # The sender itself may read its own alert (it signs the empty body) ...
    assert edge.client.get(f"/alerts/{alert_id}", headers=signed_headers(WEBHOOK_SECRET, b"")).status_code == 200
    # ... but not another source's, and an unknown id tells a stranger nothing.
    other = bearer(SECRETS["source_alertmanager_secret"])
    assert edge.client.get(f"/alerts/{alert_id}", headers=other).status_code == 401
    assert edge.client.get("/alerts/ALR-nope").status_code == 401
    assert edge.client.get("/alerts/ALR-nope", headers=READ).status_code == 404
    assert edge.client.get("/metrics").status_code == 401
    metrics = edge.client.get("/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert metrics.status_code == 200
    assert 'aisoar_alerts_total{outcome="accepted",source="generic"} 1.0' in metrics.text
    assert "aisoar_dispatch_seconds_bucket" in metrics.text and "aisoar_approvals_waiting" in metrics.text
    assert edge.client.get("/healthz").json() == {"status": "ok"}


def test_two_identical_deliveries_at_the_same_instant_store_one(edge: Edge) -> None:
    from concurrent.futures import ThreadPoolExecutor

    body = (PROJECT_ROOT / "examples/alerts/leaked-openai-key.json").read_bytes()
    headers = signed_headers(WEBHOOK_SECRET, body)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: edge.post("generic", body, headers), range(8)))
    assert sorted(a.status_code for a in answers) == [200] * 7 + [202]
    assert len({a.json()["alert_id"] for a in answers}) == 1


# -- aisoar sources test -----------------------------------------------------------------


def test_sources_test_prints_the_alert_and_the_playbooks_without_starting_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AISOAR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    code = main(["sources", "test", "alertmanager", str(EXAMPLES / "alertmanager-leaked-key.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert '"incident_type": "api_abuse"' in out and '"key_id": "key_sandbox_leaked"' in out
    assert "would start: leaked-llm-api-key" in out
    assert not (tmp_path / "data" / "aisoar.db").exists()  # nothing stored
    broken = tmp_path / "broken.json"
    broken.write_text('{"alerts": [{"labels": {}}]}')
    assert main(["sources", "test", "alertmanager", str(broken)]) == 1
    assert "mapping" in capsys.readouterr().err


def test_every_shipped_source_is_documented_with_its_secret(tmp_path: Path) -> None:
    from aisoar.ingress.sources import secret_env_names

    doc = (PROJECT_ROOT / "docs" / "sources.md").read_text()
    shipped = load_sources(make_settings(tmp_path / "data", webhook_secrets={}))
    assert len(shipped) >= 7
    for source in shipped.values():
        assert f"| `{source.name}` | " in doc, source.name
        assert secret_env_names(source.name)[0] in doc, source.name


def test_falco_flat_dotted_keys_are_read(edge: Edge) -> None:
    response = edge.post("falco", example("falco-shell-in-agent.json"), bearer(SECRETS["source_falco_secret"]))
    assert response.status_code == 202, response.text
    alert = edge.store.get_alert(response.json()["alert_id"])
    assert alert.labels["container"] == "agent-runner-7"  # from output_fields["container.name"]
    assert [e.key for e in alert.entities] == ["agent:support-agent:agent-runner-7"]


def test_each_mapped_alert_keeps_its_own_item_as_evidence(edge: Edge) -> None:
    blocked = json.loads(example("litellm-guardrail-blocked.json"))[0]
    passed = blocked | {
        "id": "chatcmpl-PASSED",
        "guardrail_information": blocked["guardrail_information"] | {"guardrail_status": "success"},
    }
    body = json.dumps([passed, blocked]).encode()
    response = edge.post("litellm-guardrail", body, bearer(SECRETS["source_litellm_guardrail_secret"]))
    [alert_id] = response.json()["alert_ids"]
    alert = edge.store.get_alert(alert_id)
    assert alert.source_id == "chatcmpl-9a8b7c" and alert.raw["item"]["id"] == "chatcmpl-9a8b7c"


def test_metrics_without_an_api_token_say_how_to_set_one(tmp_path: Path) -> None:
    for edge in edge_for(make_settings(tmp_path / "data", api_token=None)):
        answer = edge.client.get("/metrics", headers={"Authorization": "Bearer anything"})
        assert answer.status_code == 401 and "set AISOAR_API_TOKEN" in answer.json()["detail"]
