"""A waiting approval survives the runner process dying: `aisoar serve` is killed with
SIGKILL while a run waits for approval, and a new process finishes the run without
repeating what was already done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aisoar.config import PROJECT_ROOT
from aisoar.ingress.auth import signed_headers
from aisoar.store import Store
from cli.prefect_server import PrefectServer
from sandbox.serving import free_port
from sandbox.stack import DEMO_KEY_ID, DEMO_PROJECT, Sandbox
from tests import approvals, prefect_api
from tests.conftest import API_TOKEN, READ, SANDBOX_APPROVERS, WEBHOOK_SECRET

SAMPLE = (PROJECT_ROOT / "examples/alerts/leaked-openai-key.json").read_bytes()
pytestmark = pytest.mark.e2e
STEP = "delete-key-at-provider"  # the gated step; incident-commander (alice) or ml-platform-on-call (bob) approve


class Service:
    """`aisoar serve` in its own process."""

    def __init__(self, env: dict[str, str], cwd: Path, port: int) -> None:
        self.env, self.cwd, self.port = env, cwd, port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.cwd / "serve.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve"],
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.cwd / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("aisoar serve did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture()
def services(prefect_server: PrefectServer, sandbox: Sandbox, tmp_path: Path) -> Iterator[tuple[Service, Service]]:
    port = free_port()
    env = {
        **os.environ,
        **sandbox.start(),
        "AISOAR_DATA_DIR": str(tmp_path / "data"),
        "AISOAR_INGRESS_PORT": str(port),
        "AISOAR_WEBHOOK_SECRETS__generic": WEBHOOK_SECRET,
        "AISOAR_API_TOKEN": API_TOKEN,
        "AISOAR_APPROVERS_FILE": str(SANDBOX_APPROVERS),
        "AISOAR_RUNNER_SWEEP_SECONDS": "0.3",
        "AISOAR_RUNNER_STALE_SECONDS": "1.5",
    }
    first, second = Service(env, tmp_path, port), Service(env, tmp_path, port)
    yield first, second
    first.kill()
    second.kill()


def start_paused_run(service: Service) -> tuple[str, str]:
    response = httpx.post(
        f"{service.url}/webhooks/generic", content=SAMPLE, headers=signed_headers(WEBHOOK_SECRET, SAMPLE), timeout=10
    )
    assert response.status_code == 202, response.text
    alert_id = response.json()["alert_id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = httpx.get(f"{service.url}/alerts/{alert_id}", headers=READ, timeout=5).json()
        if status["flow_runs"]:
            break
        time.sleep(0.05)
    run_id = status["flow_runs"]["leaked-llm-api-key"]
    paused = prefect_api.wait_for_state(run_id, "PAUSED", timeout=60)
    # The form is saved just after the run is suspended: the run waits for an answer once it is up.
    prefect_api.run_input(run_id, paused["state"]["state_details"]["run_input_keyset"]["schema"])
    return status["incident_id"], run_id


def assert_finished_once(sandbox: Sandbox, data_dir: Path, incident_id: str, run_id: str, approver: str) -> None:
    prefect_api.wait_for_state(run_id, "COMPLETED", timeout=60)
    assert DEMO_KEY_ID not in sandbox.openai.projects[DEMO_PROJECT]
    # Nothing done before the crash was done again.
    assert len(sandbox.slack.messages) == 1
    reviews = [i for i in sandbox.jira.issues.values() if "aisoar-review" in i["fields"]["labels"]]
    assert len(sandbox.jira.issues) == 2 and len(reviews) == 1  # the incident's issue; the close's review
    assert [r["path"] for r in sandbox.litellm.requests].count("/key/block") == 1
    store = Store(f"sqlite:///{data_dir / 'aisoar.db'}")
    decided = store.approvals_for(incident_id)
    assert [(a.status, a.decided_by) for a in decided] == [("approved", approver)]
    assert [(a.channel, a.person, a.counted) for a in decided[0].answers] == [("prefect-ui", approver, True)]
    assert store.get_incident(incident_id).status.value == "closed"
    steps = [e.step_id for e in store.get_incident(incident_id).timeline if e.kind == "step"]
    assert len(steps) == len(set(steps)), json.dumps(steps)


def test_an_answer_given_while_no_runner_is_up_is_not_lost(
    services: tuple[Service, Service], sandbox: Sandbox, tmp_path: Path
) -> None:
    first, second = services
    first.start()
    incident_id, run_id = start_paused_run(first)
    first.kill()
    # A responder approves in the UI, with the code Slack sent them, while nothing is running the flow.
    approvals.approve_in_form(sandbox, run_id, STEP, "bob", "go")
    assert DEMO_KEY_ID in sandbox.openai.projects[DEMO_PROJECT]
    second.start()
    assert_finished_once(sandbox, tmp_path / "data", incident_id, run_id, "bob")


def test_a_new_runner_keeps_the_form_up_and_acts_on_the_answer(
    services: tuple[Service, Service], sandbox: Sandbox, tmp_path: Path
) -> None:
    first, second = services
    first.start()
    incident_id, run_id = start_paused_run(first)
    first.kill()
    second.start()
    time.sleep(2.5)  # past the stale heartbeat: nothing takes the suspended run before it is answered
    assert prefect_api.flow_run(run_id)["state"]["type"] == "PAUSED"
    approvals.approve_in_form(sandbox, run_id, STEP, "alice", "go")
    assert_finished_once(sandbox, tmp_path / "data", incident_id, run_id, "alice")
