"""Containment latency: webhook POST -> the block request reaches the gateway.

Prints p50 / p99 side by side, measured in the same run, for
  aisoar    signed POST to the ingress -> inbox -> incident -> flow run on Prefect ->
            evidence steps -> /key/block arrives at the gateway
  plain     the plain Prefect way: run_deployment() to a deployment served with
            flow.serve() and default settings, whose task calls /key/block
  floor     the same /key/block HTTP call made directly
and, for aisoar, the time from a responder's resume (the UI's API call: the approval form
answered with the one-time code Slack sent them by DM) until the approved step's request
reaches the provider.

Everything runs on loopback: a real Prefect server (SQLite, locked with basic auth as
`aisoar up` locks its own) and the sandbox fakes.
Usage: python bench/containment.py [--alerts 50] [--baseline-runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = Path(tempfile.mkdtemp(prefix="aisoar-bench-"))
sys.path.insert(0, str(HERE.parent))

from cli.prefect_auth import basic_auth, credential  # noqa: E402
from sandbox.serving import free_port  # noqa: E402

PREFECT_PORT = free_port()
# The bench's Prefect server is locked as `aisoar up` locks its own; every client sends this.
PREFECT_AUTH = credential(WORK).auth_string
PREFECT_HEADERS = basic_auth(PREFECT_AUTH)  # for the raw API calls below (what the UI sends)
os.environ.pop("PREFECT_API_KEY", None)
os.environ.update(
    {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_HOME": str(WORK / "prefect-client"),
        "PREFECT_API_URL": f"http://127.0.0.1:{PREFECT_PORT}/api",
        "PREFECT_API_AUTH_STRING": PREFECT_AUTH,
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
)

import httpx  # noqa: E402

from aisoar.config import PROJECT_ROOT, Settings  # noqa: E402
from aisoar.ingress.auth import signed_headers  # noqa: E402
from cli.prefect_server import PrefectServer  # noqa: E402
from sandbox.stack import DEMO_PROJECT, SANDBOX_PEOPLE, Sandbox  # noqa: E402

SECRET = "bench-webhook-secret"
APPROVERS = PROJECT_ROOT / "sandbox" / "approvers.yaml"  # alice: incident-commander, may approve the deletion
APPROVER_SLACK_ID = "U0ALICE"
GATED_STEP = "delete-key-at-provider"
CODE = re.compile(r"\*([A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4})\*")  # as in the DM (tests/approvals.py)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.002)


def approval_code(sandbox: Sandbox, incident_id: str, timeout: float = 30) -> str:
    """The one-time code the approver got by Slack DM for the gated step of ``incident_id``."""
    deadline = time.monotonic() + timeout
    while True:
        for message in reversed(sandbox.slack.dms_to(APPROVER_SLACK_ID)):
            text = str(message.get("text", ""))
            found = CODE.search(text)
            if found and f"`{GATED_STEP}`" in text and f"of incident {incident_id}:" in text:
                return found.group(1)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no approval code for {incident_id} in the approver's DMs")
        time.sleep(0.01)


def run_state(run_id: str) -> str:
    """The flow run's state type, as the API (with the credential) says; "" while a Prefect
    server on SQLite answers 503 "database is locked"."""
    run = httpx.get(f"{os.environ['PREFECT_API_URL']}/flow_runs/{run_id}", headers=PREFECT_HEADERS, timeout=10)
    if run.status_code == 503:
        return ""
    run.raise_for_status()
    return str(run.json()["state"]["type"])


def arrival(requests: list[dict[str, object]], path: str, marker: str) -> float | None:
    for request in list(requests):
        if request["path"] == path and marker in json.dumps(request.get("body")) + str(request["path"]):
            return float(request["t"])  # type: ignore[arg-type]
    return None


busy_answers: list[str] = []
resume_first_try: list[float] = []


def bench_aisoar(sandbox: Sandbox, env: dict[str, str], alerts: int) -> tuple[list[float], list[float]]:
    from datetime import timedelta

    from aisoar.ingress.app import create_app
    from aisoar.ingress.dispatch import Dispatcher
    from flows.runtime import PlaybookRuntime
    from flows.services import build_services
    from sandbox.serving import BackgroundServer

    values = {k.removeprefix("AISOAR_").lower(): v for k, v in env.items()}
    settings = Settings.model_validate(
        {
            **values,
            "data_dir": WORK / "data",
            "webhook_secrets": {"generic": SECRET},
            "api_token": SECRET,
            "approvers_file": APPROVERS,
        }
    )
    svc = build_services(settings)
    runtime = PlaybookRuntime(svc)
    runtime.start()
    dispatcher = Dispatcher(svc.store, list(svc.specs.values()), runtime, timedelta(hours=1))
    ingress = BackgroundServer(create_app(settings, svc.store, dispatcher)).start()
    api = os.environ["PREFECT_API_URL"]
    containment: list[float] = []
    resume: list[float] = []
    busy_answers.clear()
    paused_runs: list[tuple[str, str, str]] = []
    try:
        # Phase 1: alerts one after another; each run is contained and then waits for approval.
        for i in range(alerts + 1):  # the first one warms up imports and connections
            secret = f"sk-proj-BENCH{i:04d}" + "x" * 32
            key_id = f"key_bench_{i}"
            key_hash = sandbox.litellm.add_key(secret, alias=f"bench-{i}", spend=10.0)
            sandbox.openai.add_key(DEMO_PROJECT, secret, key_id=key_id)
            body = json.dumps(
                {
                    "id": f"bench-{i}",
                    "title": f"bench leaked key {i}",
                    "severity": "high",
                    "incident_type": "api_abuse",
                    "entities": [
                        {
                            "type": "llm_api_key",
                            "provider": "openai",
                            "project_id": DEMO_PROJECT,
                            "key_id": key_id,
                            "secret": secret,
                        }
                    ],
                }
            ).encode()
            started = time.time()
            response = httpx.post(
                f"{ingress.url}/webhooks/generic", content=body, headers=signed_headers(SECRET, body), timeout=10
            )
            assert response.status_code == 202, response.text
            wait_for(lambda: arrival(sandbox.litellm.requests, "/key/block", key_hash), 30, "block")
            blocked = arrival(sandbox.litellm.requests, "/key/block", key_hash)
            assert blocked is not None
            alert_id = response.json()["alert_id"]
            run_id = incident_id = ""

            def paused() -> bool:
                nonlocal run_id, incident_id
                status = httpx.get(
                    f"{ingress.url}/alerts/{alert_id}", headers={"Authorization": f"Bearer {SECRET}"}, timeout=5
                ).json()
                run_id = status["flow_runs"].get("leaked-llm-api-key", "")
                incident_id = status.get("incident_id") or ""
                if not run_id:
                    return False
                return run_state(run_id) == "PAUSED"

            wait_for(paused, 30, "pause")
            paused_runs.append((run_id, incident_id, key_id))
            if i > 0:
                containment.append(blocked - started)
        # Phase 2: a responder approves each waiting run in turn, in the UI's form, with the
        # one-time code Slack sent them (read before the clock starts: the person has it already).
        for index, (run_id, incident_id, key_id) in enumerate(paused_runs):
            path = f"/v1/organization/projects/{DEMO_PROJECT}/api_keys/{key_id}"
            form = {"decision": "approve", "code": approval_code(sandbox, incident_id), "reason": "bench"}
            resumed = time.time()
            while True:  # a Prefect server on SQLite may answer 503 "database is locked"; retry like a person
                answer = httpx.post(
                    f"{api}/flow_runs/{run_id}/resume", json={"run_input": form}, headers=PREFECT_HEADERS
                )
                if answer.status_code != 503:
                    answer.raise_for_status()
                    if answer.json()["status"] != "ACCEPT":
                        raise RuntimeError(f"Prefect refused the approval of {run_id}: {answer.json()}")
                    break
                busy_answers.append(run_id)
                time.sleep(0.05)
            wait_for(lambda: arrival(sandbox.openai.requests, path, key_id), 30, "delete")
            deleted = arrival(sandbox.openai.requests, path, key_id)
            assert deleted is not None
            wait_for(lambda: run_state(run_id) == "COMPLETED", 30, "completed")
            if index > 0:
                resume.append(deleted - resumed)
                if run_id not in busy_answers:
                    resume_first_try.append(deleted - resumed)
    finally:
        ingress.stop()
        runtime.stop()
    return containment, resume


def bench_plain_prefect(sandbox: Sandbox, env: dict[str, str], runs: int) -> list[float]:
    from prefect.deployments import run_deployment

    from sandbox.litellm import hash_token

    served = subprocess.Popen(
        [sys.executable, str(HERE / "plain_prefect_flow.py")],
        env={**os.environ, **env},
        stdout=open(WORK / "serve.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    samples: list[float] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            found = httpx.post(
                f"{os.environ['PREFECT_API_URL']}/deployments/filter",
                json={"deployments": {"name": {"any_": ["plain-block"]}}},
                headers=PREFECT_HEADERS,
            ).json()
            if found:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the served deployment did not appear")
            time.sleep(0.2)
        gateway = sandbox.litellm
        for i in range(runs + 1):
            secret = f"sk-plain-{i:04d}" + "y" * 32
            key_hash = gateway.add_key(secret)
            started = time.time()
            run_deployment("block-key/plain-block", parameters={"key_hash": key_hash}, timeout=0)
            wait_for(lambda: arrival(gateway.requests, "/key/block", key_hash), 60, "plain block")
            blocked = arrival(gateway.requests, "/key/block", key_hash)
            assert blocked is not None and hash_token(secret) == key_hash
            if i > 0:
                samples.append(blocked - started)
    finally:
        served.terminate()
        served.wait(10)
    return samples


def bench_floor(sandbox: Sandbox, env: dict[str, str], runs: int) -> list[float]:
    from connectors.litellm import LiteLLMGateway

    gateway = LiteLLMGateway(env["AISOAR_LITELLM_URL"], env["AISOAR_LITELLM_MASTER_KEY"])
    samples = []
    for i in range(runs + 1):
        key_hash = sandbox.litellm.add_key(f"sk-floor-{i:04d}" + "z" * 32)
        started = time.time()
        gateway.block_key(key_hash)
        blocked = arrival(sandbox.litellm.requests, "/key/block", key_hash)
        assert blocked is not None
        if i > 0:
            samples.append(blocked - started)
    return samples


def line(name: str, samples: list[float]) -> str:
    p50, p99 = percentile(samples, 0.5) * 1000, percentile(samples, 0.99) * 1000
    return f"{name:44} {len(samples):>4} {p50:>10.1f} {p99:>10.1f} {statistics.mean(samples) * 1000:>10.1f}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=50)
    parser.add_argument("--baseline-runs", type=int, default=20)
    args = parser.parse_args()
    server = PrefectServer(WORK / "prefect-server", auth_string=PREFECT_AUTH, port=PREFECT_PORT).start()
    sandbox = Sandbox.create()
    for person in SANDBOX_PEOPLE:  # the Slack workspace's people: the approvers get their codes by DM
        sandbox.slack.add_user(**person._asdict())
    try:
        env = sandbox.start()
        floor = bench_floor(sandbox, env, args.alerts)
        containment, resume = bench_aisoar(sandbox, env, args.alerts)
        plain = bench_plain_prefect(sandbox, env, args.baseline_runs)
    finally:
        sandbox.stop()
        server.stop()
    print(f"machine: {os.cpu_count()} cores; Prefect server on SQLite; all on loopback")
    print(f"{'webhook/call -> /key/block at the gateway':44} {'n':>4} {'p50 ms':>10} {'p99 ms':>10} {'mean ms':>10}")
    print(line("aisoar (ingress -> in-process runtime)", containment))
    print(line("plain Prefect (run_deployment -> serve())", plain))
    print(line("floor (the HTTP call made directly)", floor))
    print()
    print(
        f"{'resume in the UI -> approved step at provider':44} {'n':>4} {'p50 ms':>10} {'p99 ms':>10} {'mean ms':>10}"
    )
    print(line("aisoar (suspended run, sweep every 0.2 s)", resume))
    print(line("  of which accepted by Prefect at once", resume_first_try))
    print(
        f"(the Prefect server on SQLite answered 503 'database is locked' to {len(set(busy_answers))} of "
        f"{len(resume) + 1} resume calls; they were retried and are counted from the first attempt)"
    )
    print("\ntargets on this machine:")
    p50, p99 = percentile(containment, 0.5) * 1000, percentile(containment, 0.99) * 1000
    print(f"  containment p50 <= 100 ms: {p50:.0f} ms -> {'met' if p50 <= 100 else 'MISSED'}")
    print(f"  containment p99 <= 300 ms: {p99:.0f} ms -> {'met' if p99 <= 300 else 'MISSED'}")
    print(
        f"  resume -> next step <= 1000 ms: max {max(resume) * 1000:.0f} ms "
        f"(accepted at once: max {max(resume_first_try or [0]) * 1000:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
