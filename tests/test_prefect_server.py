"""The Prefect server `aisoar up` starts takes a burst of approval answers without refusing one.

On SQLite as Prefect configures it, concurrent resumes collide ("database is locked", 503:
the UI does not retry, so the responder's answer is refused). `aisoar up` gives Prefect's
server a pool of one connection (cli/prefect_server.py ``sqlite_url``); this test fails if a
Prefect upgrade stops honouring that, and shows the collisions on the stock configuration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from cli.prefect_auth import basic_auth
from cli.prefect_server import PrefectServer, server_env, sqlite_url
from flows.approvals import ApprovalForm
from sandbox.serving import free_port

AUTH = "aisoar:burst-test-credential"
ANSWERS = 40


def _paused_runs(api: str, count: int) -> list[str]:
    """Runs suspended for approval the way flows/approvals.py suspends them (schema saved)."""
    headers = basic_auth(AUTH)
    schema = ApprovalForm.model_json_schema()
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
        flow = client.post("/flows/", json={"name": "burst"}).json()
        deployment = client.post("/deployments/", json={"name": "burst", "flow_id": flow["id"]}).json()
        runs = []
        for index in range(count):
            run = client.post(f"/deployments/{deployment['id']}/create_flow_run", json={}).json()
            client.post(f"/flow_runs/{run['id']}/set_state", json={"state": {"type": "RUNNING"}, "force": True})
            keyset = {k: f"approval-gate-{index}-{k}" for k in ("description", "response", "schema")}
            paused = {
                "type": "PAUSED",
                "name": "Awaiting approval",
                "state_details": {"pause_reschedule": True, "pause_key": f"gate-{index}", "run_input_keyset": keyset},
            }
            assert client.post(f"/flow_runs/{run['id']}/set_state", json={"state": paused}).json()["status"] == "ACCEPT"
            client.post(f"/flow_runs/{run['id']}/input", json={"key": keyset["schema"], "value": json.dumps(schema)})
            runs.append(run["id"])
    return runs


def _burst(api: str, runs: list[str]) -> list[int]:
    """Every run's form answered at the same moment, as browsers send it (no retry)."""
    answer = {"decision": "approve", "code": "ABCD-EFGH-JKMN", "reason": "burst"}

    def resume(run_id: str) -> int:
        response = httpx.post(
            f"{api}/flow_runs/{run_id}/resume", headers=basic_auth(AUTH), json={"run_input": answer}, timeout=60
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        return list(pool.map(resume, runs))


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[PrefectServer]:
    started = PrefectServer(tmp_path / "prefect", auth_string=AUTH, port=free_port()).start()
    yield started
    started.stop()


def test_the_embedded_server_takes_a_burst_of_answers_without_refusing_one(server: PrefectServer) -> None:
    assert server_env(server.home, server.api_url, AUTH)["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == sqlite_url(
        server.home
    )
    runs = _paused_runs(server.api_url, ANSWERS)
    statuses = _burst(server.api_url, runs)
    assert statuses.count(503) == 0, f"{statuses.count(503)} of {ANSWERS} answers refused: database is locked"
    assert set(statuses) == {201}
    with httpx.Client(base_url=server.api_url, headers=basic_auth(AUTH), timeout=30) as client:
        found = client.post("/flow_runs/filter", json={"flow_runs": {"id": {"any_": runs}}}).json()
    assert {r["state"]["type"] for r in found} == {"SCHEDULED"}  # every run resumed
