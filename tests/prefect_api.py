"""Talking to the test Prefect server through its REST API: the same calls the UI makes."""

from __future__ import annotations

import os
import time
from typing import Any

import httpx


def api() -> str:
    return os.environ["PREFECT_API_URL"].rstrip("/")


def flow_run(run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{api()}/flow_runs/{run_id}", timeout=10)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
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
    response = httpx.post(f"{api()}/flow_runs/{run_id}/resume", json={"run_input": run_input}, timeout=10)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def run_input(run_id: str, key: str) -> Any:
    response = httpx.get(f"{api()}/flow_runs/{run_id}/input/{key}", timeout=10)
    response.raise_for_status()
    return response.json()


def task_runs(run_id: str, expected: int = 0, timeout: float = 10) -> dict[str, dict[str, Any]]:
    """Task runs of a flow run by name (they arrive through events, so wait for them)."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.post(f"{api()}/task_runs/filter",
                              json={"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200}, timeout=10)
        response.raise_for_status()
        runs = {r["name"]: r for r in response.json()}
        if len(runs) >= expected or time.monotonic() > deadline:
            return runs
        time.sleep(0.1)


def artifact(key: str) -> dict[str, Any] | None:
    response = httpx.post(f"{api()}/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}}, timeout=10)
    response.raise_for_status()
    found = response.json()
    return found[0] if found else None
