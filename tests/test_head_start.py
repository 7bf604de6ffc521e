"""The head start: a playbook's leading evidence and reversible containment run before its
Prefect run exists, and the run records them; end to end against the session's Prefect server
and the sandbox stand-ins."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from aisoar.config import PROJECT_ROOT
from aisoar.specs import load_specs
from cli.prefect_server import PrefectServer
from flows.head_start import lead
from sandbox.stack import DEMO_SECRET, Sandbox
from tasks import catalog
from tests import prefect_api
from tests.stack import SAMPLE, Stack, start_stack

pytestmark = pytest.mark.e2e
KEY_HASH = hashlib.sha256(DEMO_SECRET.encode()).hexdigest()
PLAYBOOK = "leaked-llm-api-key"
LEAD = ["preserve-alerts", "preserve-key-record", "block-key-at-gateway"]


def test_the_lead_ends_at_the_first_step_that_tells_people_waits_or_destroys() -> None:
    specs = {loaded.spec.name: loaded.spec for loaded in load_specs(PROJECT_ROOT / "playbook_specs", catalog())}
    assert [step.id for step in lead(specs[PLAYBOOK])] == LEAD  # then incident.announce
    assert [step.id for step in lead(specs["triage"])] == ["preserve-alerts"]  # then incident.announce
    # No announcement placed by the spec: the runner announces first, so nothing runs ahead of it.
    assert not specs["leaked-cloud-access-key"].announces
    assert lead(specs["leaked-cloud-access-key"]) == []


@pytest.fixture()
def stacks(prefect_server: PrefectServer, sandbox: Sandbox, tmp_path: Path) -> Iterator[Any]:
    started: list[Stack] = []

    def start(**overrides: object) -> Stack:
        stack = start_stack(sandbox, tmp_path / f"data{len(started)}", **overrides)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()


def block_requests(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [r for r in sandbox.litellm.requests if r["path"] == "/key/block"]


def test_the_key_is_blocked_before_the_run_exists_and_the_run_records_it(stacks: Any, sandbox: Sandbox) -> None:
    stack: Stack = stacks()
    status = stack.dispatched(stack.fire(SAMPLE))
    run_id = status["flow_runs"][PLAYBOOK]
    prefect_api.wait_for_state(run_id, "PAUSED")  # waiting for the deletion's approval

    (blocked,) = block_requests(sandbox)  # once, by the head start
    created = datetime.fromisoformat(prefect_api.flow_run(run_id)["created"]).timestamp()
    assert blocked["t"] < created, "the block reached the gateway before the flow run was created"
    assert sandbox.litellm.keys[KEY_HASH]["blocked"] is True

    store = stack.svc.store
    results = store.step_results(status["incident_id"], PLAYBOOK)
    assert {step for step, r in results.items() if r.output.get("head_start")} == set(LEAD)
    assert results["block-key-at-gateway"].status == "ok" and results["block-key-at-gateway"].output["verified"]
    assert not results["notify-oncall"].output.get("head_start")  # the announcement is the run's

    incident = store.get_incident(status["incident_id"])
    started = [e.message for e in incident.timeline if e.kind == "run" and "running" in e.message]
    assert started == [f"playbook {PLAYBOOK} running; done before it was created (the head start): {', '.join(LEAD)}"]
    assert incident.status.value == "contained"  # said by the run, from the verified block

    # The run is the record of every step: the head start's steps are task runs of it, named
    # after their outcome, saying when they were done.
    names = [*LEAD, "block-key-at-gateway.verify", "notify-oncall"]
    steps = prefect_api.task_runs(run_id, names)
    for step_id in LEAD:
        state = steps[step_id]["state"]
        assert state["type"] == "COMPLETED" and state["name"] == "Done", (step_id, state)
        assert "before this run was created: the head start" in state["message"], state
    verify = steps["block-key-at-gateway.verify"]["state"]
    assert verify["type"] == "COMPLETED" and verify["name"] == "Verified", verify
    # On-call hears that the key is blocked, from the run.
    told = " ".join(m["text"] for m in [*sandbox.slack.messages, *sandbox.slack.replies])
    assert "CONTAINED (verified at the target)" in told, told


def test_without_the_head_start_the_run_does_every_step(stacks: Any, sandbox: Sandbox) -> None:
    stack: Stack = stacks(head_start=False)
    status = stack.dispatched(stack.fire(SAMPLE))
    run_id = status["flow_runs"][PLAYBOOK]
    prefect_api.wait_for_state(run_id, "PAUSED")
    (blocked,) = block_requests(sandbox)
    created = datetime.fromisoformat(prefect_api.flow_run(run_id)["created"]).timestamp()
    assert blocked["t"] > created
    results = stack.svc.store.step_results(status["incident_id"], PLAYBOOK)
    assert not any(r.output.get("head_start") for r in results.values())
    steps = prefect_api.task_runs(run_id, [*LEAD, "block-key-at-gateway.verify"])
    assert "head start" not in (steps["block-key-at-gateway"]["state"]["message"] or "")


def test_plan_mode_has_no_head_start(stacks: Any, sandbox: Sandbox) -> None:
    stack: Stack = stacks(plan_mode=True)
    status = stack.dispatched(stack.fire(SAMPLE))
    run_id = status["flow_runs"][PLAYBOOK]
    prefect_api.wait_for_state(run_id, "COMPLETED", "FAILED")
    assert block_requests(sandbox) == []
    assert sandbox.litellm.keys[KEY_HASH].get("blocked") is not True
    results = stack.svc.store.step_results(status["incident_id"], PLAYBOOK)
    assert results["block-key-at-gateway"].status == "planned"
    assert not any(r.output.get("head_start") for r in results.values())
