"""Talking to the test Prefect server through its REST API: the same calls the UI makes."""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from cli.prefect_auth import basic_auth


def api() -> str:
    return os.environ["PREFECT_API_URL"].rstrip("/")


def headers() -> dict[str, str]:
    """What Prefect's client and UI send to a locked server: ``Basic base64(PREFECT_API_AUTH_STRING)``."""
    return basic_auth(os.environ["PREFECT_API_AUTH_STRING"])


def _call(method: str, path: str, **kwargs: Any) -> Any:
    """One API call. A Prefect server on SQLite answers 503 ("database is locked") under
    write contention; like Prefect's own client, try again a few times."""
    for attempt in range(6):
        response = httpx.request(method, f"{api()}{path}", headers=headers(), timeout=10, **kwargs)
        if response.status_code != 503 or attempt == 5:
            break
        time.sleep(0.2 * (attempt + 1))
    response.raise_for_status()
    return response.json()


def filter_runs(body: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = _call("POST", "/flow_runs/filter", json=body)
    return result


def create_run(deployment_id: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """What the UI's Run button sends: a run of the deployment with these parameters."""
    result: dict[str, Any] = _call(
        "POST", f"/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters}
    )
    return result


def flow(flow_id: str) -> dict[str, Any]:
    result: dict[str, Any] = _call("GET", f"/flows/{flow_id}")
    return result


def flow_run(run_id: str) -> dict[str, Any]:
    result: dict[str, Any] = _call("GET", f"/flow_runs/{run_id}")
    return result


def wait_for_state(run_id: str, *types: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run = flow_run(run_id)
    while time.monotonic() < deadline:
        run = flow_run(run_id)
        if run["state"]["type"] in types:
            return run
        if run["state"]["type"] in {"FAILED", "CRASHED", "CANCELLED"} and not {"FAILED", "CRASHED"} & set(types):
            raise AssertionError(f"flow run {run_id} ended {run['state']}")
        time.sleep(0.1)
    raise AssertionError(f"flow run {run_id} is {run['state']['type']}, not {types}, after {timeout}s")


def resume(run_id: str, run_input: dict[str, Any]) -> dict[str, Any]:
    """What the UI's approval form sends."""
    result: dict[str, Any] = _call("POST", f"/flow_runs/{run_id}/resume", json={"run_input": run_input})
    return result


def run_input(run_id: str, key: str) -> Any:
    """A run input. Prefect saves the form's inputs just after the run enters Suspended,
    so right after the state change they may not be there yet."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return _call("GET", f"/flow_runs/{run_id}/input/{key}")
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def task_runs(run_id: str, names: list[str], timeout: float = 120) -> dict[str, dict[str, Any]]:
    """Task runs of a flow run by name, once every name in ``names`` has a final state.

    Task runs reach the server through events, a little after they ran (on a busy machine, well
    over a minute after): wait for them."""
    deadline = time.monotonic() + timeout
    while True:
        found = _call("POST", "/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200})
        runs = {r["name"]: r for r in found}
        done = all(
            name in runs and runs[name]["state"] is not None and runs[name]["state"]["type"] in FINAL for name in names
        )
        if done:
            return runs
        if time.monotonic() > deadline:
            seen = {name: (run["state"] or {}).get("name") for name, run in sorted(runs.items())}
            raise AssertionError(f"task runs {names} of {run_id} not all final after {timeout}s; the server has {seen}")
        time.sleep(0.1)


FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def filter_artifacts(run_id: str) -> list[dict[str, Any]]:
    """The artifacts attached to a flow run (what its Artifacts tab lists)."""
    result: list[dict[str, Any]] = _call(
        "POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    )
    return result


def artifact(key: str) -> dict[str, Any] | None:
    """The newest version of the artifact ``key`` (what the UI shows under that key). Without a
    sort the API orders by id, a random UUID: any version."""
    found = _call("POST", "/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC"})
    return found[0] if found else None
