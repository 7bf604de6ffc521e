"""Approvals you can trust, end to end: the request in the incident's Slack thread with its
buttons, clicks signed as Slack signs them and posted to the ingress; codes by Slack DM typed
into the form the Prefect UI submits, or given to ``aisoar approve``; escalation tier by tier.
Every answer is recorded on the approval, counted or not, and no destructive step runs
without the quorum of verified people."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from aisoar.case import report_key
from aisoar.ingress.adapters import read
from aisoar.ingress.dispatch import Dispatcher
from aisoar.ingress.sources import load_sources
from cli.prefect_server import PrefectServer
from sandbox.stack import DEMO_KEY_ID, DEMO_PROJECT, Sandbox
from tests import approvals, prefect_api
from tests.conftest import SANDBOX_APPROVERS
from tests.e2e_specs import spec_variant
from tests.stack import SAMPLE, Stack, start_stack

pytestmark = pytest.mark.e2e
STEP = "delete-key-at-provider"


def _paused(stack: Stack) -> tuple[str, str]:
    status = stack.dispatched(stack.fire(SAMPLE))
    run_id = status["flow_runs"]["leaked-llm-api-key"]
    prefect_api.wait_for_state(run_id, "PAUSED")
    return status["incident_id"], run_id


def _key_deleted(sandbox: Sandbox) -> bool:
    return DEMO_KEY_ID not in sandbox.openai.projects[DEMO_PROJECT]


def test_one_click_in_slack_approves_and_the_message_says_who(stack: Stack) -> None:
    incident_id, run_id = _paused(stack)
    request = approvals.approval_message(stack.sandbox, STEP)
    assert request["thread_ts"] == stack.sandbox.slack.messages[0]["ts"]  # in the incident's thread
    text = str(request["blocks"])
    assert "Alice Ng (alice), Bob Okafor (bob)" in text and "Expires:" in text
    assert [e["action_id"] for b in request["blocks"] if b["type"] == "actions" for e in b["elements"]] == [
        approvals.APPROVE,
        approvals.REJECT,
    ]

    delivery = approvals.click(stack.sandbox, "alice", STEP)
    assert (delivery["outcome"], delivery["status"]) == ("ok", 200)
    prefect_api.wait_for_state(run_id, "COMPLETED", timeout=30)
    assert _key_deleted(stack.sandbox)

    decided = stack.svc.store.approvals_for(incident_id)[0]
    assert (decided.status, decided.decided_by) == ("approved", "alice")
    assert [(a.channel, a.person, a.claimed, a.counted) for a in decided.answers] == [
        ("slack", "alice", "Slack user U0ALICE (@alice)", True)
    ]
    updated = approvals.approval_message(stack.sandbox, STEP)
    assert "Approved* by Alice Ng (alice)" in str(updated["blocks"])
    assert not [b for b in updated["blocks"] if b["type"] == "actions"]  # nothing left to click
    timeline = [e.message for e in stack.svc.store.get_incident(incident_id).timeline]
    assert any(m.startswith("approved by Alice Ng (alice) via Slack") for m in timeline)
    # The run's own page says what was decided, by whom.
    found = prefect_api.filter_artifacts(run_id)
    decision = next(a for a in found if a["key"].startswith(f"approval-{STEP}"))
    assert "APPROVED" in decision["data"] and "Alice Ng" in decision["data"]
    assert report_key(incident_id) in {a["key"] for a in found}  # the report is the run's too
    # Flows are named after their playbooks: Prefect's lists tell playbooks apart.
    flow = prefect_api.flow(prefect_api.flow_run(run_id)["flow_id"])
    assert flow["name"] == "leaked-llm-api-key"


def test_a_click_from_outside_the_set_is_refused_privately_and_recorded(stack: Stack) -> None:
    incident_id, run_id = _paused(stack)
    for outsider in ("mallory", "carol"):  # not in the directory's roles for this gate / not an approver here
        assert approvals.click(stack.sandbox, outsider, STEP)["status"] == 200
    deadline = time.monotonic() + 10
    while len(stack.sandbox.slack.ephemeral) < 2:
        assert time.monotonic() < deadline, "no private refusal"
        time.sleep(0.05)
    refusals = {e["user"]: e["text"] for e in stack.sandbox.slack.ephemeral}
    assert "not a verified approver identity" in refusals["U0MALLORY"]
    assert "carol is not among the approvers" in refusals["U0CAROL"]
    assert prefect_api.flow_run(run_id)["state"]["type"] == "PAUSED"
    assert not _key_deleted(stack.sandbox)
    record = stack.svc.store.approvals_for(incident_id)[0]
    assert record.status == "pending"
    assert [(a.claimed, a.counted) for a in record.answers] == [
        ("Slack user U0MALLORY (@mallory)", False),
        ("Slack user U0CAROL (@carol)", False),
    ]
    timeline = [e.message for e in stack.svc.store.get_incident(incident_id).timeline]
    assert any("answer refused (Slack): Slack user U0MALLORY (@mallory) approved" in m for m in timeline)
    # An allowed person's Reject decides: the key stays blocked, not deleted.
    approvals.click(stack.sandbox, "bob", STEP, approvals.REJECT)
    prefect_api.wait_for_state(run_id, "COMPLETED", timeout=30)
    assert not _key_deleted(stack.sandbox)
    assert stack.svc.store.approvals_for(incident_id)[0].decided_by == "bob"


def test_a_replayed_or_forged_click_counts_for_nothing(
    prefect_server: PrefectServer, sandbox: Sandbox, tmp_path: Path
) -> None:
    gate = "    gate: {approval: {approvers: [incident-commander, ml-platform-on-call], quorum: 2, timeout: 1h}}\n"
    stack = start_stack(sandbox, tmp_path / "data", specs_dir=spec_variant(tmp_path, gate))
    try:
        incident_id, run_id = _paused(stack)
        delivery = approvals.click(sandbox, "alice", STEP)
        sent = delivery["sent"]
        url = f"{stack.ingress}/slack/interactivity"
        # The same signed request again (within Slack's 5 minutes): answered, recorded once.
        replay = httpx.post(url, content=sent["body"].encode(), headers=sent["headers"], timeout=10)
        assert replay.status_code == 200
        # Forged: Bob's id in Alice's signed body, or a signature made with a guessed secret.
        forged_body = sent["body"].replace("U0ALICE", "U0BOB")
        forged = httpx.post(url, content=forged_body.encode(), headers=sent["headers"], timeout=10)
        assert forged.status_code == 401
        guessed = dict(sent["headers"], **{"X-Slack-Signature": "v0=" + "0" * 64})
        assert httpx.post(url, content=forged_body.encode(), headers=guessed, timeout=10).status_code == 401
        stale = dict(sent["headers"], **{"X-Slack-Request-Timestamp": str(int(time.time()) - 600)})
        assert httpx.post(url, content=sent["body"].encode(), headers=stale, timeout=10).status_code == 401
        unsigned = {"Content-Type": "application/x-www-form-urlencoded"}
        assert httpx.post(url, content=forged_body.encode(), headers=unsigned, timeout=10).status_code == 401

        time.sleep(0.5)
        record = stack.svc.store.approvals_for(incident_id)[0]
        assert (record.status, record.approved_by, len(record.answers)) == ("pending", ["alice"], 1)
        assert prefect_api.flow_run(run_id)["state"]["type"] == "PAUSED" and not _key_deleted(sandbox)
        assert "Approved so far by Alice Ng (alice) (1 of 2)" in str(
            approvals.approval_message(sandbox, STEP)["blocks"]
        )
        approvals.click(sandbox, "bob", STEP)
        prefect_api.wait_for_state(run_id, "COMPLETED", timeout=30)
        assert _key_deleted(sandbox)
    finally:
        stack.stop()


def test_codes_are_personal_single_use_and_end_with_the_request(stack: Stack) -> None:
    incident_id, run_id = _paused(stack)
    alice = approvals.code_for(stack.sandbox, "alice", STEP)
    bob = approvals.code_for(stack.sandbox, "bob", STEP)
    assert alice != bob
    assert stack.sandbox.slack.dms_to(approvals.SLACK_ID["mallory"]) == []  # no code for outsiders
    # Alice's code rejects; her code cannot be used again; Bob's still works, for Bob.
    approvals.answer_form(run_id, "reject", alice, "wait: is this our CI key?")
    prefect_api.wait_for_state(run_id, "COMPLETED", timeout=30)
    record = stack.svc.store.approvals_for(incident_id)[0]
    assert (record.status, record.decided_by) == ("rejected", "alice")
    assert not _key_deleted(stack.sandbox)
    person, problem = stack.svc.store.use_code(record.id, record.args_sha256, alice)
    assert person is None and problem == "the code of alice was already used"
    # The request is decided: Bob's unused code is refused as an answer (recorded, not counted).
    late = stack.runtime.desk.answer_with_code(record, bob, "approve", "", "cli", "late")
    assert not late.counted and "already rejected" in (late.refusal or "")


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **stack.env,
        "AISOAR_DATA_DIR": str(stack.settings.data_dir),
        "AISOAR_APPROVERS_FILE": str(SANDBOX_APPROVERS),
        "AISOAR_SPECS_DIR": str(stack.settings.specs_dir),
    }
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_the_cli_approves_with_a_code_and_refuses_without(stack: Stack) -> None:
    incident_id, run_id = _paused(stack)
    listed = _cli(stack, "approvals")
    assert listed.returncode == 0 and incident_id in listed.stdout and STEP in listed.stdout, listed.stderr
    wrong = _cli(stack, "approve", incident_id, STEP, "--code", "AAAA-BBBB-CCCC")
    assert wrong.returncode == 3 and "not counted: wrong code" in wrong.stderr + wrong.stdout
    assert prefect_api.flow_run(run_id)["state"]["type"] == "PAUSED"
    code = approvals.code_for(stack.sandbox, "bob", STEP)
    done = _cli(stack, "approve", incident_id, STEP, "--code", code, "--reason", "leak confirmed")
    assert done.returncode == 0, done.stderr
    assert f"Step {STEP} of {incident_id} is APPROVED (by Bob Okafor (bob))" in done.stdout
    prefect_api.wait_for_state(run_id, "COMPLETED", timeout=30)
    assert _key_deleted(stack.sandbox)
    record = stack.svc.store.approvals_for(incident_id)[0]
    assert [(a.channel, a.person, a.counted) for a in record.answers] == [("cli", None, False), ("cli", "bob", True)]
    again = _cli(stack, "approve", incident_id, STEP, "--code", code)
    assert again.returncode == 3 and "already approved" in again.stderr + again.stdout


def test_an_answer_survives_a_runtime_that_cannot_wake_the_run(
    prefect_server: PrefectServer, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The click is recorded while nothing can wake the run; the next runtime wakes it."""
    stack = start_stack(sandbox, tmp_path / "data")
    try:
        incident_id, run_id = _paused(stack)
        stack.runtime.stop()  # nobody can wake the run now, as if Prefect refused every call
        approvals.click(sandbox, "alice", STEP)
        record = stack.svc.store.approvals_for(incident_id)[0]
        deadline = time.monotonic() + 10
        while not record.wake_pending and time.monotonic() < deadline:
            time.sleep(0.05)
            record = stack.svc.store.approvals_for(incident_id)[0]
        assert record.status == "approved" and record.wake_pending
        assert prefect_api.flow_run(run_id)["state"]["type"] == "PAUSED"
    finally:
        stack.stop()
    later = start_stack(sandbox, tmp_path / "data")  # the next runtime on the same store finds it
    try:
        prefect_api.wait_for_state(run_id, "COMPLETED", timeout=60)
        assert _key_deleted(sandbox)
        assert not later.svc.store.approvals_for(incident_id)[0].wake_pending
    finally:
        later.stop()


def test_silence_escalates_tier_by_tier(prefect_server: PrefectServer, sandbox: Sandbox, tmp_path: Path) -> None:
    gate = (
        "    gate:\n      approval:\n        approvers: [incident-commander]\n        timeout: 1h\n"
        "        escalation:\n          - {after: 2s, remind: true}\n          - {after: 4s, page: security-manager}\n"
        "          - {after: 6s, page: ciso}\n"
    )
    stack = start_stack(
        sandbox,
        tmp_path / "data",
        ("litellm", "openai", "slack", "jira", "pagerduty"),
        specs_dir=spec_variant(tmp_path, gate),
    )
    try:
        incident_id, run_id = _paused(stack)
        deadline = time.monotonic() + 30
        while stack.svc.store.approvals_for(incident_id)[0].escalation_level < 3:
            assert time.monotonic() < deadline, "the escalation did not reach tier 3"
            time.sleep(0.1)

        def escalations() -> list[str]:
            timeline = stack.svc.store.get_incident(incident_id).timeline
            return [e.message for e in timeline if e.kind == "approval" and e.message.startswith("escalation ")]

        # The level is claimed first, then the page is sent and the step written: give it its moment.
        while len(steps := escalations()) < 3 and time.monotonic() < deadline + 10:
            time.sleep(0.1)
        assert [m.split(":")[0] for m in steps] == ["escalation 1/3", "escalation 2/3", "escalation 3/3"]
        assert "reminded alice" in steps[0]
        assert "paged security-manager in PagerDuty" in steps[1] and "security-manager (Dave Kim (dave))" in steps[1]
        assert "paged ciso in PagerDuty" in steps[2]
        pages = [e for e in sandbox.pagerduty.events if "approval needed" in str(e.get("payload", {}))]
        assert [p["payload"]["summary"].split("]")[0] for p in pages] == ["[security-manager", "[ciso"]
        # The level is recorded before the thread is told: give the last reply its moment.
        deadline = time.monotonic() + 10
        while sum("ESCALATED" in r["text"] for r in sandbox.slack.replies) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        replies = [r["text"] for r in sandbox.slack.replies]
        assert any("REMINDER" in r for r in replies) and sum("ESCALATED" in r for r in replies) == 2
        # The paged tiers may answer now: Dave got a code, and his click counts.
        assert approvals.code_for(sandbox, "dave", STEP)
        approvals.click(sandbox, "dave", STEP)
        prefect_api.wait_for_state(run_id, "COMPLETED", timeout=30)
        assert stack.svc.store.approvals_for(incident_id)[0].decided_by == "dave"
        assert _key_deleted(sandbox)
    finally:
        stack.stop()


def test_who_started_a_run_by_hand_may_not_approve_its_steps(stack: Stack) -> None:
    """A responder starts the playbook by hand (the UI's Run, with `requested_by`): their own
    click does not count (the gate does not allow self-approval); another approver's does."""
    source = load_sources(stack.settings)["generic"]
    alert = read(source.format, "generic", json.dumps(dict(SAMPLE, id="by-hand-1")).encode()).alerts[0]
    stack.svc.store.accept_alert(alert, "by-hand-1")
    # Dispatched without a launcher: the incident exists, no run was started for it.
    result = Dispatcher(stack.svc.store, list(stack.svc.specs.values()), None, timedelta(hours=1)).dispatch(alert)
    assert result is not None and not result.launched
    deployment = stack.runtime.deployments["leaked-llm-api-key"]
    parameters = {
        "incident_id": result.incident_id,
        "playbook": "leaked-llm-api-key",
        "requested_by": "alice@example.com",
    }
    run = prefect_api.create_run(str(deployment), parameters)
    prefect_api.wait_for_state(run["id"], "PAUSED", timeout=60)
    record = stack.svc.store.approvals_for(result.incident_id)[0]
    assert record.requested_by == "alice" and not record.allow_self
    approvals.click(stack.sandbox, "alice", STEP)
    deadline = time.monotonic() + 10
    while not stack.svc.store.approvals_for(result.incident_id)[0].answers:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    refused = stack.svc.store.approvals_for(result.incident_id)[0].answers[0]
    assert not refused.counted and "alice started this run" in (refused.refusal or "")
    assert not _key_deleted(stack.sandbox)
    approvals.click(stack.sandbox, "bob", STEP)
    prefect_api.wait_for_state(run["id"], "COMPLETED", timeout=30)
    assert _key_deleted(stack.sandbox)
