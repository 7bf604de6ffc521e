"""End to end: a signed alert through the ingress, the playbook on a real Prefect server,
containment against the faithful fakes, approval through the API the UI uses."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.prefect_server import PrefectServer
from sandbox.stack import DEMO_KEY_ID, DEMO_PROJECT, DEMO_SECRET, Sandbox
from tasks.incident import report_key
from tests import approvals, prefect_api
from tests.e2e_specs import spec_variant
from tests.stack import SAMPLE, Stack, start_stack

STEPS = [
    "preserve-alerts",
    "preserve-key-record",
    "block-key-at-gateway",
    "block-key-at-gateway.verify",
    "notify-oncall",
    "open-ticket",
]

pytestmark = pytest.mark.e2e


def pause_description(run: dict[str, Any]) -> str:
    keyset = run["state"]["state_details"]["run_input_keyset"]
    return str(prefect_api.run_input(run["id"], keyset["description"]))


def test_leaked_key_is_contained_approved_and_deleted(stack: Stack) -> None:
    sandbox = stack.sandbox
    key_hash = hashlib.sha256(DEMO_SECRET.encode()).hexdigest()
    alert_id = stack.fire(SAMPLE)
    status = stack.dispatched(alert_id)
    run_id = status["flow_runs"]["leaked-llm-api-key"]
    incident_id = status["incident_id"]

    paused = prefect_api.wait_for_state(run_id, "PAUSED", timeout=60)

    # Containment happened before anyone was asked: blocked at the gateway, refused there.
    assert sandbox.litellm.keys[key_hash]["blocked"] is True
    refused = httpx.post(
        f"{stack.settings.litellm_url}/chat/completions", headers={"Authorization": f"Bearer {DEMO_SECRET}"}, json={}
    )
    assert refused.status_code == 401
    # Evidence was collected before the block (the ledger's order is the order of collection).
    evidence = stack.svc.store.evidence_for(incident_id)
    assert [e.description for e in evidence][:2] == [
        f"alert {alert_id} from generic (payload sha256 {hashlib.sha256(json.dumps(SAMPLE).encode()).hexdigest()})",
        "LLM gateway record of the key",
    ]
    block_request = next(i for i, r in enumerate(sandbox.litellm.requests) if r["path"] == "/key/block")
    assert block_request > 0 and sandbox.litellm.requests[0]["path"] == "/key/info"
    # On-call told, case opened, nothing destructive yet.
    assert len(sandbox.slack.messages) == 1
    message = sandbox.slack.messages[0]
    assert incident_id in message["text"]
    assert f"/runs/flow-run/{run_id}" in json.dumps(message["blocks"])
    assert "key blocked at the gateway (verified)" in json.dumps(message["blocks"])
    issues = list(sandbox.jira.issues.values())
    assert len(issues) == 1 and f"aisoar-{incident_id.lower()}" in issues[0]["fields"]["labels"]
    assert DEMO_KEY_ID in sandbox.openai.projects[DEMO_PROJECT]

    # The UI shows the playbook's own steps and a form that says what, to what, why, until when.
    names = prefect_api.task_runs(run_id, STEPS)
    assert set(STEPS) <= set(names)
    description = pause_description(paused)
    assert "openai.delete_project_key" in description and "key\\_sandbox\\_leaked" in description
    assert "irreversible" in description and "**Expires**" in description and "rejected" in description
    assert "Alice Ng \\(alice\\), Bob Okafor \\(bob\\)" in description
    # The decision comes first, is required and has no default; the code says who answers.
    schema = prefect_api.run_input(run_id, paused["state"]["state_details"]["run_input_keyset"]["schema"])
    assert list(schema["properties"])[:2] == ["decision", "code"]
    assert {"decision", "code"} <= set(schema["required"]) and "default" not in schema["properties"]["decision"]
    assert schema["properties"]["decision"]["enum"] == ["approve", "reject"]

    code = approvals.code_for(sandbox, "alice", "delete-key-at-provider")
    resumed_at = time.monotonic()
    answer = approvals.answer_form(run_id, "approve", code, "confirmed leak")
    assert answer["status"] == "ACCEPT"
    while DEMO_KEY_ID in sandbox.openai.projects[DEMO_PROJECT]:
        assert time.monotonic() - resumed_at < 5, "the approved step did not run within 5 s"
        time.sleep(0.02)
    prefect_api.wait_for_state(run_id, "COMPLETED", timeout=30)

    gone = httpx.post(
        f"{stack.settings.openai_url}/chat/completions",
        headers={"Authorization": f"Bearer {DEMO_SECRET}"},
        json={},
    )
    assert gone.status_code == 401
    incident = stack.svc.store.get_incident(incident_id)
    assert incident.status.value == "closed"
    decided = stack.svc.store.approvals_for(incident_id)
    assert [(a.status, a.decided_by) for a in decided] == [("approved", "alice")]
    assert [(a.channel, a.person, a.counted) for a in decided[0].answers] == [("prefect-ui", "alice", True)]
    verified = [e.message for e in incident.timeline if e.kind == "verify"]
    containment = [m for m in verified if not m.startswith(("Slack shows", "Jira issue", "the incident is"))]
    assert containment == [
        "the gateway reports the key as refused (blocked)",
        f"OpenAI no longer lists key {DEMO_KEY_ID} in {DEMO_PROJECT}",
    ]
    # The run's final state says what was achieved, computed from the verified outcomes.
    final = prefect_api.flow_run(run_id)["state"]
    assert final["type"] == "COMPLETED" and final["name"] == "Contained"
    assert "met: the key is refused at the gateway or at the provider" in final["message"]
    assert "Incident closed" in final["message"]
    closed = next(e.message for e in incident.timeline if e.kind == "incident" and e.message.startswith("closed"))
    assert "contained: met: the key is refused at the gateway or at the provider (block-key-at-gateway" in closed
    # Evidence files exist, are read-only, and hash to what the ledger recorded.
    for item in stack.svc.store.evidence_for(incident_id):
        path = Path(item.location)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == item.sha256
        assert not path.stat().st_mode & 0o222
    assert stack.svc.store.verify_custody_chain() == []
    report = prefect_api.artifact(report_key(incident_id))
    assert report is not None
    assert all(e.sha256 in report["data"] for e in stack.svc.store.evidence_for(incident_id))
    assert DEMO_SECRET not in report["data"]


def test_the_same_alert_twice_starts_one_run(stack: Stack) -> None:
    first = stack.dispatched(stack.fire(SAMPLE))
    time.sleep(1.05)  # a new signature: a second, separate delivery
    second = stack.dispatched(stack.fire(SAMPLE))
    assert first["incident_id"] == second["incident_id"]
    assert first["flow_runs"] == second["flow_runs"]
    run_id = first["flow_runs"]["leaked-llm-api-key"]
    # Launching again (a retried dispatch) is deduplicated by Prefect's idempotency key.
    assert stack.runtime.launch(first["incident_id"], "leaked-llm-api-key") == run_id
    found = prefect_api.filter_runs({"flow_runs": {"tags": {"all_": [f"incident:{first['incident_id']}"]}}})
    assert [r["id"] for r in found] == [run_id]
    prefect_api.wait_for_state(run_id, "PAUSED")
    assert approvals.click(stack.sandbox, "bob", "delete-key-at-provider", approvals.REJECT)["status"] == 200
    prefect_api.wait_for_state(run_id, "COMPLETED")
    assert len(stack.sandbox.slack.messages) == 1


def test_an_empty_or_unproven_answer_decides_nothing_and_nothing_is_deleted(stack: Stack) -> None:
    status = stack.dispatched(stack.fire(SAMPLE))
    run_id = status["flow_runs"]["leaked-llm-api-key"]
    first = prefect_api.wait_for_state(run_id, "PAUSED")
    assert first["state"]["name"] == "Awaiting approval"
    # Without a decision and a code the form is refused by Prefect itself: the run stays put.
    for answer in ({}, {"decision": "approve"}, {"code": "ABCD-EFGH-JKMN"}, {"approve": True, "approver": "alice"}):
        refused = prefect_api.resume(run_id, answer)
        assert refused["status"] == "REJECT", answer
    assert prefect_api.flow_run(run_id)["state"]["state_details"]["run_input_keyset"] == (
        first["state"]["state_details"]["run_input_keyset"]
    )
    # A name typed with a made-up code proves nothing: refused, recorded, told; the form comes back.
    assert approvals.answer_form(run_id, "approve", "ABCD-EFGH-JKMN", "I am alice")["status"] == "ACCEPT"
    deadline = time.monotonic() + 30
    again = first
    while again["state"]["state_details"]["run_input_keyset"] == first["state"]["state_details"]["run_input_keyset"]:
        assert time.monotonic() < deadline, "the form did not come back"
        time.sleep(0.1)
        again = prefect_api.wait_for_state(run_id, "PAUSED")
    assert DEMO_KEY_ID in stack.sandbox.openai.projects[DEMO_PROJECT]
    recorded = stack.svc.store.approvals_for(status["incident_id"])
    assert [a.status for a in recorded] == ["pending"]
    assert [(a.channel, a.person, a.counted) for a in recorded[0].answers] == [("prefect-ui", None, False)]
    timeline = [e.message for e in stack.svc.store.get_incident(status["incident_id"]).timeline]
    assert any(m.startswith("answer refused (the Prefect UI): an answer with a wrong code") for m in timeline)
    assert any("wrong code" in r["text"] for r in stack.sandbox.slack.replies)
    # A real "no" decides: the step is Rejected (not a green Skipped), the key stays blocked.
    approvals.reject_in_form(stack.sandbox, run_id, "delete-key-at-provider", "bob", "not our key")
    prefect_api.wait_for_state(run_id, "COMPLETED")
    assert DEMO_KEY_ID in stack.sandbox.openai.projects[DEMO_PROJECT]
    names = prefect_api.task_runs(run_id, [*STEPS, "delete-key-at-provider", "close"])
    rejected = names["delete-key-at-provider"]["state"]
    assert rejected["name"] == "Rejected" and rejected["type"] == "CANCELLED"
    assert "approval rejected by Bob Okafor (bob): not our key; not done" in rejected["message"]
    incident = stack.svc.store.get_incident(status["incident_id"])
    assert incident.status.value == "closed"  # the objective (refused at the gateway) is met and verified
    closed = next(e.message for e in incident.timeline if e.message.startswith("closed:"))
    assert "not done: delete-key-at-provider: approval rejected by Bob Okafor (bob): not our key; not done" in closed
    assert any("rejected by Bob Okafor (bob) via the Prefect UI" in r["text"] for r in stack.sandbox.slack.replies)


def test_hostile_alert_text_stays_inert(stack: Stack) -> None:
    hostile = dict(
        SAMPLE,
        id="hostile-1",
        title="<!channel> {{ 7*7 }} <http://evil.example|reset your password> [x](http://evil) {noformat}",
    )
    status = stack.dispatched(stack.fire(hostile))
    run_id = status["flow_runs"]["leaked-llm-api-key"]
    paused = prefect_api.wait_for_state(run_id, "PAUSED")
    slack = json.dumps(stack.sandbox.slack.messages[0], ensure_ascii=False).replace("\u200b", "")
    assert "<!channel>" not in slack and "<http://evil" not in slack
    assert "&lt;!channel&gt;" in slack and "{{ 7*7 }}" in slack
    jira = next(iter(stack.sandbox.jira.issues.values()))["fields"]["description"]
    assert "{noformat}" not in jira and "[x]" not in jira
    description = pause_description(paused)
    assert "](http" not in description and "<http" not in description
    approvals.click(stack.sandbox, "bob", "delete-key-at-provider", approvals.REJECT)
    prefect_api.wait_for_state(run_id, "COMPLETED")


def test_an_unconfigured_connector_is_skipped_visibly(
    prefect_server: PrefectServer, sandbox: Sandbox, tmp_path: Path
) -> None:
    stack = start_stack(sandbox, tmp_path / "data", ("litellm", "openai", "slack"))
    try:
        status = stack.dispatched(stack.fire(SAMPLE))
        run_id = status["flow_runs"]["leaked-llm-api-key"]
        prefect_api.wait_for_state(run_id, "PAUSED")
        names = prefect_api.task_runs(run_id, STEPS)
        ticket = names["open-ticket"]["state"]
        assert ticket["name"] == "Not configured" and ticket["type"] == "CANCELLED"  # grey, never green
        assert ticket["message"].startswith("skipped: not configured (Jira is not configured")
        timeline = stack.svc.store.get_incident(status["incident_id"]).timeline
        assert any(e.step_id == "open-ticket" and e.message.startswith("skipped: not configured") for e in timeline)
        approvals.click(sandbox, "bob", "delete-key-at-provider", approvals.REJECT)
        prefect_api.wait_for_state(run_id, "COMPLETED")
    finally:
        stack.stop()


def test_an_unanswered_approval_expires_to_the_default(
    prefect_server: PrefectServer, sandbox: Sandbox, tmp_path: Path
) -> None:
    gate = "    gate: {approval: {approvers: [incident-commander], timeout: 3s, on_timeout: reject}}\n"
    stack = start_stack(sandbox, tmp_path / "data", specs_dir=spec_variant(tmp_path, gate), runner_stale_seconds=1.5)
    try:
        status = stack.dispatched(stack.fire(SAMPLE))
        run_id = status["flow_runs"]["leaked-llm-api-key"]
        prefect_api.wait_for_state(run_id, "PAUSED")
        prefect_api.wait_for_state(run_id, "COMPLETED", timeout=30)  # nobody answers
        decided = stack.svc.store.approvals_for(status["incident_id"])
        assert [(a.status, a.decided_by) for a in decided] == [("rejected", "timeout")]
        assert DEMO_KEY_ID in sandbox.openai.projects[DEMO_PROJECT]
        timeline = [e.message for e in stack.svc.store.get_incident(status["incident_id"]).timeline]
        assert (
            "approval of openai.delete_project_key EXPIRED unanswered: rejected by default; "
            "reversible containment stays, the step does not run"
        ) in timeline
        replies = [r["text"] for r in sandbox.slack.replies]
        request = approvals.approval_message(sandbox, "delete-key-at-provider")
        assert "Expired unanswered" in str(request["blocks"]) and "rejected: reversible containment stays" in str(
            request["blocks"]
        )
        assert not [b for b in request["blocks"] if b["type"] == "actions"]  # the buttons are gone
        assert any("EXPIRED unanswered" in r for r in replies)
    finally:
        stack.stop()


def test_a_quorum_needs_distinct_approvers(prefect_server: PrefectServer, sandbox: Sandbox, tmp_path: Path) -> None:
    gate = "    gate: {approval: {approvers: [incident-commander, ml-platform-on-call], quorum: 2, timeout: 1h}}\n"
    stack = start_stack(sandbox, tmp_path / "data", specs_dir=spec_variant(tmp_path, gate))
    step = "delete-key-at-provider"
    try:
        status = stack.dispatched(stack.fire(SAMPLE))
        run_id = status["flow_runs"]["leaked-llm-api-key"]
        prefect_api.wait_for_state(run_id, "PAUSED")
        # One person, twice (a click and a code in the form): one approval, never a quorum of two.
        assert approvals.click(sandbox, "alice", step)["status"] == 200
        approvals.approve_in_form(sandbox, run_id, step, "alice")
        deadline = time.monotonic() + 10
        while len(stack.svc.store.approvals_for(status["incident_id"])[0].answers) < 2:
            assert time.monotonic() < deadline, "the form's answer was not recorded"
            time.sleep(0.05)
        prefect_api.wait_for_state(run_id, "PAUSED")
        assert DEMO_KEY_ID in sandbox.openai.projects[DEMO_PROJECT], "deleted on one person's word"
        assert approvals.click(sandbox, "bob", step)["status"] == 200
        prefect_api.wait_for_state(run_id, "COMPLETED")
        assert DEMO_KEY_ID not in sandbox.openai.projects[DEMO_PROJECT]
        decided = stack.svc.store.approvals_for(status["incident_id"])
        assert [(a.status, a.decided_by) for a in decided] == [("approved", "alice, bob")]
        assert [(a.person, a.channel, a.counted) for a in decided[0].answers] == [
            ("alice", "slack", True),
            ("alice", "prefect-ui", False),
            ("bob", "slack", True),
        ]
    finally:
        stack.stop()


def test_a_failed_notification_is_told_and_tried_again_when_the_run_runs_again(stack: Stack) -> None:
    real_token = stack.sandbox.jira.token
    stack.sandbox.jira.token = "rotated-elsewhere"  # Jira refuses aisoar's credentials for now
    status = stack.dispatched(stack.fire(SAMPLE))
    run_id = status["flow_runs"]["leaked-llm-api-key"]
    # A failed ticket does not stop the containment: the run goes on to the approval.
    prefect_api.wait_for_state(run_id, "PAUSED")
    names = prefect_api.task_runs(run_id, STEPS)
    assert names["open-ticket"]["state"]["type"] == "FAILED" and "HTTP 401" in names["open-ticket"]["state"]["message"]
    assert any("Step open-ticket FAILED" in r["text"] for r in stack.sandbox.slack.replies)
    assert stack.sandbox.litellm.keys[hashlib.sha256(DEMO_SECRET.encode()).hexdigest()]["blocked"] is True
    assert not stack.sandbox.jira.issues

    stack.sandbox.jira.token = real_token
    approvals.reject_in_form(stack.sandbox, run_id, "delete-key-at-provider", "bob", "keep it")
    prefect_api.wait_for_state(run_id, "COMPLETED")
    assert len(stack.sandbox.slack.messages) == 1  # one thread, never a second parent
    assert [r["path"] for r in stack.sandbox.litellm.requests].count("/key/block") == 1  # done once
    opened = [i for i in stack.sandbox.jira.issues.values() if "aisoar-review" not in i["fields"]["labels"]]
    assert len(opened) == 1  # the failed step ran again and opened the issue (besides the review of the close)
