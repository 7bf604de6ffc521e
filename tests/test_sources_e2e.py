"""Real detection sources end to end: the real Alertmanager delivers to aisoar's ingress and a
playbook contains the key; a GitHub-shaped delivery starts the leaked-key playbook and the
incident says what GitHub's webhook does not carry. No code of the user's: the shipped
source files (sources/*.yaml) and their secrets only."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aisoar.config import PROJECT_ROOT
from aisoar.ingress.auth import github_signature
from cli.prefect_server import PrefectServer
from sandbox.stack import DEMO_SECRET, Sandbox
from tests import prefect_api
from tests.conftest import READ
from tests.servers.alertmanager import alert, alertmanager
from tests.stack import Stack, start_stack

AM_TOKEN = "alertmanager-token-0123456789abcdef"
GITHUB_SECRET = "github-hook-secret-0123456789"
LEAK = {
    "alertname": "LeakedLLMKey",
    "severity": "critical",
    "incident_type": "api_abuse",
    "llm_provider": "openai",
    "project_id": "proj_sandbox",
    "key_id": "key_sandbox_leaked",
    "key_hash": hashlib.sha256(DEMO_SECRET.encode()).hexdigest(),
}


@pytest.fixture()
def sources_stack(prefect_server: PrefectServer, sandbox: Sandbox, tmp_path: Path) -> Iterator[Stack]:
    started = start_stack(
        sandbox,
        tmp_path / "data",
        source_alertmanager_secret=AM_TOKEN,
        source_github_secret=GITHUB_SECRET,
    )
    yield started
    started.stop()


def wait_for(what: str, check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def inbox_alerts(stack: Stack, source: str) -> list[str]:
    import sqlalchemy as sa

    from aisoar.store.schema import inbox

    with stack.svc.store.engine.connect() as conn:
        rows = conn.execute(sa.select(inbox.c.id).where(inbox.c.source == source).order_by(inbox.c.received_at))
        return [str(r.id) for r in rows]


def test_real_alertmanager_delivers_an_alert_that_starts_the_playbook_and_its_resolution(
    sources_stack: Stack,
) -> None:
    stack = sources_stack
    key_hash = LEAK["key_hash"]
    firing = alert(LEAK, {"summary": "OpenAI key key_sandbox_leaked abused", "description": "40x spend, 3 new IPs"})
    with alertmanager(f"{stack.ingress}/webhooks/alertmanager", bearer_token=AM_TOKEN) as am:
        am.post_alerts([firing])
        [alert_id] = wait_for("Alertmanager's delivery", lambda: inbox_alerts(stack, "alertmanager"))
        status = stack.dispatched(alert_id)
        run_id = status["flow_runs"]["leaked-llm-api-key"]
        prefect_api.wait_for_state(run_id, "PAUSED", timeout=60)
        # The target really changed: the key is blocked at the gateway, and refused there.
        assert stack.sandbox.litellm.keys[key_hash]["blocked"] is True
        refused = httpx.post(
            f"{stack.settings.litellm_url}/chat/completions", headers={"Authorization": f"Bearer {DEMO_SECRET}"}
        )
        assert refused.status_code == 401

        am.resolve([firing])
        wait_for("the resolved notification", lambda: len(inbox_alerts(stack, "alertmanager")) == 2)
    incident_id = status["incident_id"]

    def resolved_on_timeline() -> bool:
        timeline = stack.svc.store.get_incident(incident_id).timeline
        return any(e.data.get("state") == "resolved" for e in timeline)

    wait_for("the resolution on the incident's timeline", resolved_on_timeline)
    incident = stack.svc.store.get_incident(incident_id)
    assert list(incident.flow_run_ids) == ["leaked-llm-api-key"]  # the resolution started nothing
    assert prefect_api.flow_run(run_id)["state"]["type"] == "PAUSED"  # nor changed the run
    replies = [str(m["text"]) for m in stack.sandbox.slack.replies]
    assert any("is resolved (aisoar" in text for text in replies), replies


def test_a_github_secret_scanning_delivery_starts_the_leaked_key_playbook_and_says_what_it_lacks(
    sources_stack: Stack,
) -> None:
    stack = sources_stack
    body = (PROJECT_ROOT / "examples/sources/github-secret-scanning-created.json").read_bytes()
    ping = (PROJECT_ROOT / "examples/sources/github-ping.json").read_bytes()

    def deliver(event: str, payload: bytes, delivery: str) -> httpx.Response:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/abc1234",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": github_signature(GITHUB_SECRET, payload),
        }
        return httpx.post(f"{stack.ingress}/webhooks/github", content=payload, headers=headers, timeout=10)

    pong = deliver("ping", ping, "d0a8f3c0-0000-11ef-8000-000000000001")
    assert pong.status_code == 200 and pong.json()["status"] == "ignored"
    assert inbox_alerts(stack, "github") == []

    accepted = deliver("secret_scanning_alert", body, "d0a8f3c0-0000-11ef-8000-000000000002")
    assert accepted.status_code == 202, accepted.text
    redelivered = deliver("secret_scanning_alert", body, "d0a8f3c0-0000-11ef-8000-000000000002")
    assert redelivered.status_code == 200 and redelivered.json()["status"] == "duplicate"

    status = stack.dispatched(accepted.json()["alert_id"])
    assert list(status["flow_runs"]) == ["leaked-llm-api-key"]
    incident = stack.svc.store.get_incident(status["incident_id"])
    notes = [e.message for e in incident.timeline if e.message.startswith("note on alert")]
    assert any("does not carry the secret" in n for n in notes), notes
    run = prefect_api.wait_for_state(status["flow_runs"]["leaked-llm-api-key"], "PAUSED", "FAILED", "COMPLETED")
    # Nothing was blocked on a guess (the only key the sandbox knows is untouched), and the run
    # says so: not contained, never a green Completed.
    assert not stack.sandbox.litellm.keys[LEAK["key_hash"]].get("blocked")
    assert (run["state"]["type"], run["state"]["name"]) == ("FAILED", "Not contained")
    told = [str(m["text"]) for m in stack.sandbox.slack.replies]
    assert any("names no key id and project: nothing can be deleted" in text for text in told), told
    read = httpx.get(f"{stack.ingress}/alerts/{accepted.json()['alert_id']}", headers=READ, timeout=5)
    assert read.status_code == 200 and json.loads(read.text)["source"] == "github"
