"""No leaked secret is kept in clear anywhere: alerts that carry every kind of secret (in the
title, the description, labels, undeclared fields, an Alertmanager annotation) and an approval
answer typed with secrets run through the whole stack; then the data dir, the Prefect server's
database and logs, the captured logs and every stand-in's records are searched for them."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from aisoar.config import PROJECT_ROOT
from cli.prefect_server import PrefectServer
from sandbox.stack import DEMO_SECRET, Sandbox
from tests import approvals, prefect_api
from tests.stack import SAMPLE, Stack, start_stack

AM_TOKEN = "alertmanager-token-leaks-0123456789"


def _b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def leaked_secrets() -> dict[str, str]:
    """One fresh secret of each kind (built here, so the repository holds none)."""
    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

    def rand(n: int, alphabet: str = alnum) -> str:
        return "".join(secrets.choice(alphabet) for _ in range(n))

    pem_body = "\n".join(rand(64, alnum + "+/") for _ in range(6))
    return {
        "openai": "sk-proj-" + rand(48),
        "anthropic": "sk-ant-api03-" + rand(60),
        "aws_secret": rand(40, alnum + "/+"),
        "github": "ghp_" + rand(36),
        "google": "AIza" + rand(35, alnum + "_-"),
        "stripe": "sk_live_" + rand(24),
        "slack_webhook": f"https://hooks.slack.com/services/T{rand(8).upper()}/B{rand(8).upper()}/{rand(24)}",
        "slack_token": "xoxb-" + "-".join([rand(11, "0123456789"), rand(12, "0123456789"), rand(24)]),
        "jwt": ".".join([_b64url({"alg": "HS256", "typ": "JWT"}), _b64url({"sub": rand(12)}), rand(43, alnum + "_-")]),
        "pem": "-----BEGIN " + "RSA PRIVATE KEY-----\n" + pem_body + "\n-----END " + "RSA PRIVATE KEY-----",
    }


def fragments(secret: str) -> list[str]:
    """The secret and a long inner piece of it (a partial leak counts too)."""
    inner = secret.replace("-----BEGIN RSA PRIVATE KEY-----", "").strip()[:32]
    return [secret, inner]


@pytest.fixture()
def leak_stack(prefect_server: PrefectServer, sandbox: Sandbox, tmp_path: Path) -> Any:
    started = start_stack(sandbox, tmp_path / "data", source_alertmanager_secret=AM_TOKEN)
    yield started
    started.stop()


def test_no_secret_of_any_kind_is_kept_in_clear_anywhere(
    leak_stack: Stack, prefect_server: PrefectServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stack = leak_stack
    leaked = leaked_secrets()
    text = " ".join(f"{kind}={value}" for kind, value in leaked.items())
    alert = json.loads(json.dumps(SAMPLE))
    alert["title"] = f"Key leaked with {leaked['github']} and {leaked['stripe']}"
    alert["description"] = f"Found in config: {text}"
    alert["labels"] = {**alert["labels"], "token": leaked["slack_token"], "hook": leaked["slack_webhook"]}
    alert["context"] = {"aws": leaked["aws_secret"], "jwt": leaked["jwt"], "pem": leaked["pem"]}
    alert_id = stack.fire(alert)
    status = stack.dispatched(alert_id)
    run_id = status["flow_runs"]["leaked-llm-api-key"]
    prefect_api.wait_for_state(run_id, "PAUSED", timeout=60)

    # A responder pastes secrets into the approval form: the Prefect server refuses the answer
    # (the form's schema), so its database never holds it; the form stays open.
    code = approvals.code_for(stack.sandbox, "bob", "delete-key-at-provider")
    for typed_code, reason in (
        (code, f"not sure {leaked['github']}"),
        (code, f"not sure; the token was {leaked['slack_token']} and {leaked['google']}"),
        (leaked["github"], "not sure"),  # pasted where the code goes
    ):
        refused = approvals.answer_form(run_id, "reject", typed_code, reason)
        assert refused["status"] == "REJECT", refused
        assert prefect_api.flow_run(run_id)["state"]["type"] == "PAUSED"
    answer = approvals.answer_form(run_id, "reject", code, "not sure")
    assert answer["status"] == "ACCEPT"
    prefect_api.wait_for_state(run_id, "FAILED", "COMPLETED", timeout=60)
    # Only the clean answer reached aisoar, counted for the code's owner.
    decided = stack.svc.store.approvals_for(status["incident_id"])
    assert [(a.status, a.decided_by, a.reason) for a in decided] == [("rejected", "bob", "not sure")]
    assert [(a.channel, a.person, a.counted) for a in decided[0].answers] == [("prefect-ui", "bob", True)]

    # Alertmanager-shaped delivery, secrets in its annotations.
    delivery = json.loads((PROJECT_ROOT / "examples/sources/alertmanager-leaked-key.json").read_text())
    delivery["alerts"][0]["annotations"]["description"] = text
    delivery["alerts"][0]["fingerprint"] = "leaks00000000001"
    response = httpx.post(
        f"{stack.ingress}/webhooks/alertmanager",
        json=delivery,
        headers={"Authorization": f"Bearer {AM_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    stack.dispatched(response.json()["alert_id"])
    time.sleep(1)  # the runs' last writes

    places: dict[str, bytes] = {}
    for root, name in ((stack.settings.data_dir, "data dir"), (prefect_server.home, "Prefect server")):
        for path in Path(root).rglob("*"):
            if path.is_file():
                places[f"{name}: {path}"] = path.read_bytes()
    places["captured logs"] = caplog.text.encode()
    sandbox = stack.sandbox
    stand_ins = {
        "slack": [sandbox.slack.messages, sandbox.slack.replies, sandbox.slack.dms, sandbox.slack.ephemeral],
        "jira": sandbox.jira.issues,
        "pagerduty": getattr(sandbox.pagerduty, "events", []),
        "litellm": sandbox.litellm.requests,
    }
    for name, records in stand_ins.items():
        places[f"stand-in {name}"] = json.dumps(records, default=str).encode()

    found = [
        f"{kind} in {where}"
        for kind, secret in leaked.items()
        for piece in fragments(secret)
        for where, content in places.items()
        if piece.encode() in content or json.dumps(piece)[1:-1].encode() in content
    ]
    assert found == [], "\n".join(found)
    # ... while containment still found the declared key by its fingerprint.
    assert sandbox.litellm.keys[hashlib.sha256(DEMO_SECRET.encode()).hexdigest()]["blocked"] is True
