"""Every way a run can end, end to end against the real Prefect server and the stand-ins: the
target's state, the incident's status, the run's final state (its type and name, what a
responder reads on the run page), the Slack thread and the Jira issue.

The happy path, a rejection that leaves the key blocked, an empty or unproven answer and a
failed notification are in test_e2e.py; an expiry too. Here: a rejection that leaves nothing
contained, a Cancel while an approval waits, a target down for 90 s then back, a target down
for good (and a new alert that drives the run again), an alert no playbook answers, a run
suspended without its form, a deleted flow run during a sweep, and a 404 from something that
is not the gateway."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.prefect_server import PrefectServer
from connectors.errors import ConnectorError
from connectors.litellm import LiteLLMGateway
from connectors.openai import SYSTEM as OPENAI
from sandbox.stack import DEMO_KEY_ID, DEMO_PROJECT, DEMO_SECRET, Sandbox
from tests import approvals, prefect_api
from tests.e2e_specs import spec_variant, with_approval_timeout
from tests.faults import fault_proxy
from tests.servers.openbao import OpenBao
from tests.stack import SAMPLE, Stack, start_stack

pytestmark = pytest.mark.e2e
KEY_HASH = hashlib.sha256(DEMO_SECRET.encode()).hexdigest()
PLAYBOOK = "leaked-llm-api-key"


def replies(stack: Stack) -> list[str]:
    """The thread as a reader sees it, parent first (blocks included, Slack's escapes undone)."""
    posted = [*stack.sandbox.slack.messages, *stack.sandbox.slack.replies]
    seen = [json.dumps([r["text"], r.get("blocks")], ensure_ascii=False) for r in posted]
    return [text.replace("\u200b", "").replace("\\n", "\n") for text in seen]


def final_state(run_id: str, *types: str, timeout: float = 60) -> dict[str, Any]:
    state: dict[str, Any] = prefect_api.wait_for_state(run_id, *types, timeout=timeout)["state"]
    return state


def jira_comments(stack: Stack) -> str:
    issues = list(stack.sandbox.jira.issues.values())
    assert len(issues) == 1, issues
    return json.dumps(issues[0]["fields"]["comment"]["comments"])


@pytest.fixture()
def stacks(prefect_server: PrefectServer, sandbox: Sandbox, tmp_path: Path) -> Iterator[Any]:
    started: list[Stack] = []

    def start(connectors: tuple[str, ...] = ("litellm", "openai", "slack", "jira"), **overrides: object) -> Stack:
        stack = start_stack(sandbox, tmp_path / f"data{len(started)}", connectors, **overrides)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()


def test_a_rejection_that_leaves_nothing_contained_ends_red_and_open(stacks: Any, openbao: OpenBao) -> None:
    with openbao.client() as root:
        created = root.post("/v1/auth/token/create", json={"policies": ["default"], "ttl": "1h"})
        created.raise_for_status()
        token, accessor = created.json()["auth"]["client_token"], created.json()["auth"]["accessor"]
    stack: Stack = stacks(("slack", "jira"), vault_url=openbao.url, vault_token=openbao.root_token)
    alert = {
        "id": f"vault-audit-{accessor[:8]}",
        "title": "Agent a7's Vault token used from an unknown host",
        "severity": "high",
        "incident_type": "unauthorized_access",
        "entities": [{"type": "cloud_credential", "provider": "openbao", "credential_id": accessor}],
    }
    status = stack.dispatched(stack.fire(alert))
    run_id = status["flow_runs"]["agent-credential-compromise"]
    paused = final_state(run_id, "PAUSED")
    assert paused["name"] == "Awaiting approval"
    # On-call heard before anyone was asked: the runner announced first, then asked.
    assert len(stack.sandbox.slack.messages) == 1
    assert any("Approval needed for step revoke-token" in r for r in replies(stack))

    # Carol (platform-security-on-call, an approver of this gate) says no with her code.
    approvals.reject_in_form(stack.sandbox, run_id, "revoke-token", "carol", "it is our CI runner")
    state = final_state(run_id, "FAILED")
    assert state["name"] == "Rejected", state
    assert "NOT contained: NOT met: the token is revoked" in state["message"]
    with openbao.client(token) as as_agent:
        assert as_agent.get("/v1/auth/token/lookup-self").status_code == 200  # nothing was revoked
    incident = stack.svc.store.get_incident(status["incident_id"])
    assert incident.status.value == "not contained"  # never closed by a spec's text
    assert not any(e.message.startswith("closed") for e in incident.timeline)
    decided = stack.svc.store.approvals_for(status["incident_id"])
    assert [(a.status, a.decided_by) for a in decided] == [("rejected", "carol")]
    assert [(a.channel, a.person, a.counted) for a in decided[0].answers] == [("prefect-ui", "carol", True)]
    assert "revoke-token: approval rejected by Carol Haddad (carol): it is our CI runner" in state["message"]
    assert any("rejected by Carol Haddad (carol) via the Prefect UI" in r for r in replies(stack))
    assert any("ended *Rejected*" in r and "stays not contained" in r for r in replies(stack)), replies(stack)
    issue = next(iter(stack.sandbox.jira.issues.values()))
    assert issue["fields"]["status"]["name"] != "Done"
    report = prefect_api.artifact(f"incident-report-{status['incident_id'].lower()}")
    assert report is not None and "NOT met" in report["data"] and "revoke\\-token" in report["data"]


def test_cancel_while_an_approval_waits_is_a_recorded_rejection(stacks: Any) -> None:
    stack: Stack = stacks()
    status = stack.dispatched(stack.fire(SAMPLE))
    run_id = status["flow_runs"][PLAYBOOK]
    final_state(run_id, "PAUSED")
    # What the UI's red Cancel sends.
    prefect_api._call("POST", f"/flow_runs/{run_id}/set_state", json={"state": {"type": "CANCELLING"}})
    deadline = time.monotonic() + 60
    while (state := prefect_api.flow_run(run_id)["state"])["type"] != "COMPLETED":  # Cancelled, then runs on
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    assert state["name"] == "Contained"  # blocked at the gateway and verified; the deletion was not approved
    assert "delete-key-at-provider: approval rejected by a Prefect UI user who cancelled the run" in state["message"]
    assert DEMO_KEY_ID in stack.sandbox.openai.projects[DEMO_PROJECT]
    decided = stack.svc.store.approvals_for(status["incident_id"])
    assert [a.status for a in decided] == ["rejected"]
    assert decided[0].decided_by is not None and "cancelled the run" in decided[0].decided_by
    assert any("REJECTED: the run was cancelled in the Prefect UI" in r for r in replies(stack))
    names = prefect_api.task_runs(run_id, ["delete-key-at-provider"])
    assert names["delete-key-at-provider"]["state"]["name"] == "Rejected"


def test_a_gateway_down_for_90_seconds_is_ridden_out(stacks: Any, sandbox: Sandbox) -> None:
    env = sandbox.start(("litellm",))
    with fault_proxy(env["AISOAR_LITELLM_URL"]) as (proxy, url):
        stack: Stack = stacks(litellm_url=url, step_retry_delays=[10.0, 20.0, 30.0, 45.0])
        proxy.down_for(90)
        started = time.monotonic()
        status = stack.dispatched(stack.fire(SAMPLE))
        run_id = status["flow_runs"][PLAYBOOK]
        final_state(run_id, "PAUSED", timeout=180)
        assert time.monotonic() - started >= 90
        assert sandbox.litellm.keys[KEY_HASH]["blocked"] is True
        incident = stack.svc.store.get_incident(status["incident_id"])
        tries = [e.message for e in incident.timeline if e.kind == "error" and e.data.get("retry")]
        assert len(tries) >= 3 and "trying again" in tries[0] and "HTTP 503" in tries[0], tries
        step = prefect_api.task_runs(run_id, ["preserve-key-record"])["preserve-key-record"]
        assert step["run_count"] >= 4 and step["state"]["type"] == "COMPLETED"  # retried in the UI, then done
        approvals.reject_in_form(sandbox, run_id, "delete-key-at-provider", "bob", "blocking is enough")
        assert final_state(run_id, "COMPLETED")["name"] == "Contained"


def test_a_gateway_down_for_good_is_not_contained_and_a_new_alert_drives_the_run_again(
    stacks: Any, sandbox: Sandbox
) -> None:
    env = sandbox.start(("litellm",))
    with fault_proxy(env["AISOAR_LITELLM_URL"]) as (proxy, url):
        stack: Stack = stacks(litellm_url=url, step_retry_delays=[0.2, 0.2])
        proxy.down_for(float("inf"))
        status = stack.dispatched(stack.fire(SAMPLE))
        run_id = status["flow_runs"][PLAYBOOK]
        state = final_state(run_id, "FAILED", timeout=90)
        assert state["name"] == "Not contained", state
        assert "NOT met: the key is refused at the gateway or at the provider" in state["message"]
        assert "stopped at step preserve-key-record" in state["message"]
        assert not sandbox.litellm.keys[KEY_HASH].get("blocked")
        incident = stack.svc.store.get_incident(status["incident_id"])
        assert incident.status.value == "not contained"
        # On-call was told: the announcement still ran, then what failed and what is not contained.
        assert len(stack.sandbox.slack.messages) == 1
        assert any("Step preserve-key-record FAILED" in r and "after 3 tries" in r for r in replies(stack))
        assert any("ended *Not contained*" in r for r in replies(stack))
        assert "The incident stays not contained; a responder must act" in jira_comments(stack)  # Jira told too

        # The gateway is back; the next alert about the same key runs the playbook again.
        proxy.up()
        time.sleep(1.05)  # a new signature: a second delivery
        again = stack.dispatched(stack.fire(SAMPLE))
        assert again["incident_id"] == status["incident_id"] and again["flow_runs"][PLAYBOOK] == run_id
        final_state(run_id, "PAUSED", timeout=60)
        assert sandbox.litellm.keys[KEY_HASH]["blocked"] is True
        # Contained the moment the block is verified, while the deletion still waits for approval.
        assert stack.svc.store.get_incident(status["incident_id"]).status.value == "contained"
        assert any("CONTAINED (verified at the target)" in r for r in replies(stack))
        timeline = [e.message for e in stack.svc.store.get_incident(status["incident_id"]).timeline]
        assert "a new alert runs playbook leaked-llm-api-key again: the incident is not contained" in timeline
        approvals.reject_in_form(sandbox, run_id, "delete-key-at-provider", "bob", "blocking is enough")
        assert final_state(run_id, "COMPLETED")["name"] == "Contained"


def test_an_alert_no_playbook_answers_is_triaged_and_heard(stacks: Any) -> None:
    stack: Stack = stacks(("slack", "jira", "pagerduty"))
    alert = {
        "id": "bias-report-1",
        "title": "Something odd about the model's answers",
        "severity": "critical",
    }
    status = stack.dispatched(stack.fire(alert))
    assert list(status["flow_runs"]) == ["triage"]
    state = final_state(status["flow_runs"]["triage"], "FAILED")
    assert state["name"] == "Needs triage" and "nothing contained" in state["message"]
    incident = stack.svc.store.get_incident(status["incident_id"])
    assert incident.status.value == "open"
    assert len(stack.sandbox.slack.messages) == 1
    assert any("No playbook answers this alert" in r for r in replies(stack))
    assert any("ended *Needs triage*" in r for r in replies(stack))
    assert len(stack.sandbox.jira.issues) == 1
    assert [e["event_action"] for e in stack.sandbox.pagerduty.events] == ["trigger"]  # critical: paged


def test_a_run_suspended_without_its_form_gets_the_form_back(stacks: Any) -> None:
    stack: Stack = stacks()
    status = stack.dispatched(stack.fire(SAMPLE))
    run_id = status["flow_runs"][PLAYBOOK]
    final_state(run_id, "PAUSED")
    # What a crash between the Suspended state and the form's write leaves behind: the run
    # suspended under a pause key whose form was never stored.
    keyset = {
        part: f"approval-approval-delete-key-at-provider-7-{part}" for part in ("description", "response", "schema")
    }
    details = {"pause_key": "approval-delete-key-at-provider-7", "pause_reschedule": True, "run_input_keyset": keyset}
    lost = {"type": "PAUSED", "name": "Awaiting approval", "state_details": details}
    assert prefect_api._call("POST", f"/flow_runs/{run_id}/set_state", json={"state": lost, "force": True})
    # A well-formed answer with a real code: Prefect itself refuses it, there is no form to check it against.
    code = approvals.code_for(stack.sandbox, "alice", "delete-key-at-provider")
    refused = approvals.answer_form(run_id, "approve", code, "y")
    assert refused["status"] == "REJECT" and "schema not found" in refused["details"]["reason"]
    deadline = time.monotonic() + 30
    while True:
        run = prefect_api.flow_run(run_id)
        new_keyset = run["state"]["state_details"].get("run_input_keyset")
        if run["state"]["type"] == "PAUSED" and new_keyset and new_keyset != keyset:
            break
        assert time.monotonic() < deadline, "the form was not put back"
        time.sleep(0.2)
    prefect_api.run_input(run_id, new_keyset["schema"])
    # The refused answer never reached aisoar: the same code still works in the form put back.
    answer = approvals.answer_form(run_id, "approve", code, "leak confirmed")
    assert answer["status"] == "ACCEPT", answer
    assert final_state(run_id, "COMPLETED")["name"] == "Contained"
    decided = stack.svc.store.approvals_for(status["incident_id"])
    assert [(a.status, a.decided_by) for a in decided] == [("approved", "alice")]
    assert [(a.channel, a.person, a.counted) for a in decided[0].answers] == [("prefect-ui", "alice", True)]
    assert DEMO_KEY_ID not in stack.sandbox.openai.projects[DEMO_PROJECT]
    timeline = [e.message for e in stack.svc.store.get_incident(status["incident_id"]).timeline]
    assert "the run was suspended without its approval form; the form is put back" in timeline


def test_a_deleted_flow_run_does_not_stop_the_sweep(stacks: Any, tmp_path: Path) -> None:
    gate = "    gate: {approval: {approvers: [incident-commander], timeout: 4s, on_timeout: reject}}\n"
    stack: Stack = stacks(specs_dir=spec_variant(tmp_path, gate), runner_stale_seconds=1.5)
    first = stack.dispatched(stack.fire(SAMPLE))
    other = dict(SAMPLE, id="second-delivery", fingerprint="another-incident-same-key")
    second = stack.dispatched(stack.fire(other))
    assert first["incident_id"] != second["incident_id"]
    deleted, kept = first["flow_runs"][PLAYBOOK], second["flow_runs"][PLAYBOOK]
    final_state(deleted, "PAUSED")
    final_state(kept, "PAUSED")
    for _ in range(20):  # the SQLite server answers 503 "database is locked" now and then
        gone = httpx.delete(f"{prefect_api.api()}/flow_runs/{deleted}", headers=prefect_api.headers())
        if gone.status_code != 503:
            break
        time.sleep(0.2)
    assert gone.status_code == 204, gone.text
    stack.runtime.sweep()  # must not raise on the missing run
    # The sweep goes on: the other run's approval still expires and its run ends.
    state = final_state(kept, "COMPLETED", timeout=30)
    assert state["name"] == "Contained"
    decided = stack.svc.store.approvals_for(second["incident_id"])
    assert [(a.status, a.decided_by) for a in decided] == [("rejected", "timeout")]


def test_a_404_counts_as_no_such_key_only_from_the_proven_gateway(sandbox: Sandbox) -> None:
    env = sandbox.start(("litellm", "openai"))
    gateway = LiteLLMGateway(env["AISOAR_LITELLM_URL"], env["AISOAR_LITELLM_MASTER_KEY"], timeout=5)
    assert gateway.key_info("0" * 64) is None  # the right system says: no such key
    # Another service at the configured URL (a wrong base URL) also answers 404: not "no such key".
    wrong = LiteLLMGateway(env["AISOAR_OPENAI_URL"], env["AISOAR_LITELLM_MASTER_KEY"], timeout=5)
    with pytest.raises(ConnectorError, match="did not prove it is LiteLLM gateway"):
        wrong.key_info("0" * 64)


def test_after_a_crash_mid_deletion_the_record_credits_the_earlier_request(stacks: Any) -> None:
    stack: Stack = stacks()
    status = stack.dispatched(stack.fire(SAMPLE))
    run_id, incident_id = status["flow_runs"][PLAYBOOK], status["incident_id"]
    final_state(run_id, "PAUSED")
    # What a process that died mid-step leaves: its request written on the timeline, the key
    # deleted at OpenAI, and no outcome recorded for the step.
    stack.svc.store.add_timeline(
        incident_id,
        "request",
        f"sending: openai.delete_project_key on openai:project-key:{DEMO_PROJECT}/{DEMO_KEY_ID}",
        step_id="delete-key-at-provider",
        data={"sending": True, "playbook": PLAYBOOK},
    )
    openai = OPENAI.settings_of(stack.settings)
    admin = openai.admin_key
    assert admin is not None and openai.url
    deleted = httpx.delete(
        f"{openai.url}/organization/projects/{DEMO_PROJECT}/api_keys/{DEMO_KEY_ID}",
        headers={"Authorization": f"Bearer {admin.get_secret_value()}"},
    )
    assert deleted.status_code == 200, deleted.text
    approvals.approve_in_form(stack.sandbox, run_id, "delete-key-at-provider", "alice", "leak confirmed")
    final_state(run_id, "COMPLETED")
    recorded = stack.svc.store.step_result(incident_id, PLAYBOOK, "delete-key-at-provider")
    assert recorded is not None and recorded.status == "ok"
    summary = str(recorded.output["summary"])
    assert "already deleted" in summary and "by this step's earlier request" in summary, summary
    assert recorded.output["done_by_earlier_request"] is True


def test_an_approval_nobody_answers_expires_red_when_nothing_else_contained(
    stacks: Any, openbao: OpenBao, tmp_path: Path
) -> None:
    with openbao.client() as root:
        created = root.post("/v1/auth/token/create", json={"policies": ["default"], "ttl": "1h"})
        created.raise_for_status()
        token, accessor = created.json()["auth"]["client_token"], created.json()["auth"]["accessor"]
    specs = with_approval_timeout(tmp_path, "agent-credential-compromise.yaml", "3s")
    stack: Stack = stacks(("slack", "jira"), vault_url=openbao.url, vault_token=openbao.root_token, specs_dir=specs)
    alert = {
        "id": f"vault-audit-{accessor[:8]}-x",
        "title": "Agent a7's Vault token used from an unknown host",
        "severity": "high",
        "incident_type": "unauthorized_access",
        "entities": [{"type": "cloud_credential", "provider": "openbao", "credential_id": accessor}],
    }
    status = stack.dispatched(stack.fire(alert))
    run_id = status["flow_runs"]["agent-credential-compromise"]
    final_state(run_id, "PAUSED")
    state = final_state(run_id, "FAILED", timeout=60)  # nobody answers
    assert state["name"] == "Expired", state
    assert "revoke-token: approval expired unanswered" in state["message"]
    with openbao.client(token) as as_agent:
        assert as_agent.get("/v1/auth/token/lookup-self").status_code == 200  # nothing was revoked
    assert stack.svc.store.get_incident(status["incident_id"]).status.value == "not contained"
    assert any("EXPIRED unanswered: rejected by default" in r for r in replies(stack))
    assert any("ended *Expired*" in r for r in replies(stack))
