"""Many approvals at once, on the embedded default: none refused, none lost.

N playbook runs wait for approval at the same time (a real Prefect server on SQLite, locked
with basic auth and configured as `aisoar up` configures it, and the sandbox's Slack). Then:

  slack   N allowed people's clicks on Approve arrive at once (signed by the Slack stand-in,
          posted to the ingress's /slack/interactivity): each is recorded in aisoar's store
          before Slack gets its 200, then the runs are woken;
  form    N answers in the Prefect UI's form arrive at once (the resume call the UI makes, with
          the one-time code from the Slack DM; the UI does not retry a refused call).

Counts what was refused (an answer the sender must give again) and lost (a run that never
carried on), and how long until every run had finished. The form phase also runs against the
Prefect server as Prefect configures SQLite out of the box, side by side (the baseline).
Usage: python bench/approvals.py [--runs 100] [--phases slack,form,form-stock]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = Path(tempfile.mkdtemp(prefix="aisoar-bench-approvals-"))
sys.path.insert(0, str(HERE.parent))

from cli.prefect_auth import basic_auth, credential  # noqa: E402
from sandbox.serving import free_port  # noqa: E402

PREFECT_PORT = free_port()  # each phase's server in turn; Prefect reads its API URL once
PREFECT_AUTH = credential(WORK).auth_string
HEADERS = basic_auth(PREFECT_AUTH)
os.environ.pop("PREFECT_API_KEY", None)
os.environ.update(
    {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_HOME": str(WORK / "prefect-client"),
        "PREFECT_API_URL": f"http://127.0.0.1:{PREFECT_PORT}/api",
        "PREFECT_API_AUTH_STRING": PREFECT_AUTH,
        "PREFECT_LOGGING_LEVEL": "ERROR",
    }
)

import httpx  # noqa: E402

from aisoar.config import PROJECT_ROOT, Settings  # noqa: E402
from aisoar.ingress.auth import signed_headers  # noqa: E402
from cli.prefect_server import PrefectServer  # noqa: E402
from sandbox.stack import Sandbox  # noqa: E402

SECRET = "bench-webhook-secret"
CODE = re.compile(r"\*([A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4})\*")
STEP = "tell-after-approval"
SPEC = """
name: bench-approval
title: One approval (benchmark)
incident_type: api_abuse
triggers:
  - labels: {bench: approvals}
steps:
  - id: preserve-alerts
    action: evidence.capture_alerts
  - id: tell-after-approval
    action: slack.post_update
    with: {message: "approved; carrying on"}
    gate:
      approval:
        approvers: [incident-commander]
        timeout: 1h
"""


def start_prefect(name: str, stock: bool) -> PrefectServer:
    """A Prefect server as `aisoar up` starts one, or with SQLite as Prefect configures it."""
    home = WORK / name
    if stock:  # Prefect's own default database URL: a pool of connections on one SQLite file
        os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{home}/prefect.db"
    else:
        os.environ.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
    server = PrefectServer(home, auth_string=PREFECT_AUTH, port=PREFECT_PORT).start()
    os.environ.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
    return server


class Bench:
    def __init__(self, runs: int, prefect: PrefectServer, phase: str) -> None:
        self.runs = runs
        self.prefect = prefect
        self.phase = phase
        specs = WORK / f"specs-{phase}"
        specs.mkdir()
        (specs / "bench-approval.yaml").write_text(SPEC)
        self.sandbox = Sandbox.create()
        self.sandbox.seed_demo()
        env = self.sandbox.start(("slack",))
        values: dict[str, Any] = {
            "data_dir": WORK / f"data-{phase}",
            "webhook_secrets": {"generic": SECRET},
            "specs_dir": specs,
            "approvers_file": PROJECT_ROOT / "sandbox" / "approvers.yaml",
            "runner_sweep_seconds": 0.2,
            "prefect_ui_url": prefect.url,
        }
        values |= {k.removeprefix("AISOAR_").lower(): v for k, v in env.items()}
        settings = Settings.model_validate(values)

        from aisoar.ingress.app import create_app
        from aisoar.ingress.dispatch import Dispatcher
        from flows.runtime import PlaybookRuntime
        from flows.services import build_services
        from sandbox.serving import BackgroundServer

        self.svc = build_services(settings)
        self.runtime = PlaybookRuntime(self.svc)
        self.runtime.start()
        dispatcher = Dispatcher(self.svc.store, list(self.svc.specs.values()), self.runtime, timedelta(hours=1))
        self.server = BackgroundServer(create_app(settings, self.svc.store, dispatcher, desk=self.runtime.desk))
        self.server.start()
        self.sandbox.set_slack_request_url(f"{self.server.url}/slack/interactivity")

    def stop(self) -> None:
        self.server.stop()
        self.runtime.stop()
        self.sandbox.stop()

    def waiting_runs(self) -> list[tuple[str, str]]:
        """Fire ``runs`` distinct alerts; return (approval id, flow run id) once all wait."""
        started = time.monotonic()
        with httpx.Client(timeout=30) as client:
            for index in range(self.runs):
                alert = {
                    "id": f"bench-{self.phase}-{index}",
                    "title": f"bench alert {index}",
                    "severity": "low",
                    "incident_type": "api_abuse",
                    "labels": {"bench": "approvals", "n": str(index)},
                    "entities": [{"type": "user", "user_id": f"user-{self.phase}-{index}"}],
                }
                body = json.dumps(alert).encode()
                answer = client.post(
                    f"{self.server.url}/webhooks/generic", content=body, headers=signed_headers(SECRET, body)
                )
                assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 20 + self.runs * 3
        while True:
            pending = [a for a in self.svc.store.pending_approvals() if a.flow_run_id and a.slack_ts]
            paused = self._paused({a.flow_run_id or "" for a in pending})
            if len(pending) == self.runs and len(paused) == self.runs:
                break
            if time.monotonic() > deadline:
                some = self.svc.store.list_incidents()[:1]
                said = [e.message for e in self.svc.store.get_incident(some[0].id).timeline] if some else []
                raise TimeoutError(f"only {len(paused)} of {self.runs} runs came to wait for approval: {said}")
            time.sleep(0.5)
        print(f"  {self.runs} runs waiting for approval after {time.monotonic() - started:.0f} s")
        return [(a.id, a.flow_run_id or "") for a in pending]

    def _paused(self, run_ids: set[str]) -> set[str]:
        if not run_ids:
            return set()
        found = httpx.post(
            f"{self.prefect.api_url}/flow_runs/filter",
            headers=HEADERS,
            json={"flow_runs": {"id": {"any_": sorted(run_ids)}}, "limit": 200},
            timeout=30,
        ).json()
        return {r["id"] for r in found if r["state"]["type"] == "PAUSED"}

    def finished(self, run_ids: list[str], timeout: float) -> tuple[int, float]:
        started = time.monotonic()
        done: set[str] = set()
        while time.monotonic() - started < timeout:
            found = httpx.post(
                f"{self.prefect.api_url}/flow_runs/filter",
                headers=HEADERS,
                json={"flow_runs": {"id": {"any_": run_ids}}, "limit": 200},
                timeout=30,
            ).json()
            done = {r["id"] for r in found if r["state"]["type"] in ("COMPLETED", "FAILED")}
            if len(done) == len(run_ids):
                break
            time.sleep(0.25)
        return len(done), time.monotonic() - started

    def click_all(self, waiting: list[tuple[str, str]]) -> dict[str, Any]:
        """Every request's Approve clicked by Alice at once."""
        messages = {}
        with self.sandbox.slack.lock:
            for reply in self.sandbox.slack.replies:
                for block in reply.get("blocks", []):
                    if str(block.get("block_id", "")).startswith("approval-request:"):
                        messages[block["block_id"].split(":", 1)[1]] = reply
        slack = self.sandbox.servers["slack"].url

        def click(approval_id: str) -> str:
            """What the clicker saw: "200", or Slack's error (the app did not answer in 3 s...)."""
            message = messages[approval_id]
            spec = {"user": "U0ALICE", "channel": message["channel"], "message_ts": message["ts"]}
            answer = httpx.post(
                f"{slack}/_sandbox/click", json={**spec, "action_id": "aisoar_approve"}, timeout=60
            ).json()
            return str(answer["status"]) if answer["outcome"] == "ok" else f"{answer['outcome']}: {answer['error']}"

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(waiting)) as pool:
            outcomes = list(pool.map(click, [a for a, _ in waiting]))
        answered = time.monotonic() - started
        time.sleep(2)  # a click Slack gave up on may still be recorded by aisoar
        recorded = [
            run for a, run in waiting if (r := self.svc.store.get_approval(a)) is not None and r.status == "approved"
        ]
        done, took = self.finished(recorded, timeout=120 + len(waiting)) if recorded else (0, 0.0)
        refused = {o: outcomes.count(o) for o in set(outcomes) if o != "200"}
        return {
            "answers": len(waiting),
            "refused": len(waiting) - outcomes.count("200"),
            "refused_as": refused,
            "recorded": len(recorded),
            "carried_on": done,
            "lost": len(recorded) - done,
            "answered_s": answered,
            "all_done_s": answered + 2 + took,
        }

    def form_all(self, waiting: list[tuple[str, str]]) -> dict[str, Any]:
        """Every run's form answered at once with Alice's code, as the UI sends it (no retry)."""
        codes: dict[str, str] = {}
        for approval_id, _ in waiting:
            record = self.svc.store.get_approval(approval_id)
            assert record is not None
            for message in self.sandbox.slack.dms_to("U0ALICE"):
                text = str(message.get("text", ""))
                if record.incident_id in text and (found := CODE.search(text)):
                    codes[approval_id] = found.group(1)

        def answer(item: tuple[str, str]) -> str:
            approval_id, run_id = item
            form = {"decision": "approve", "code": codes[approval_id], "reason": "bench"}
            try:
                response = httpx.post(
                    f"{self.prefect.api_url}/flow_runs/{run_id}/resume",
                    headers=HEADERS,
                    json={"run_input": form},
                    timeout=60,
                )
            except httpx.HTTPError as exc:
                return type(exc).__name__
            if response.status_code not in (200, 201):
                return str(response.status_code)
            return str(response.json().get("status"))

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(waiting)) as pool:
            outcomes = list(pool.map(answer, waiting))
        answered = time.monotonic() - started
        accepted = [run for (_, run), outcome in zip(waiting, outcomes, strict=True) if outcome == "ACCEPT"]
        done, took = self.finished(accepted, timeout=120 + len(waiting)) if accepted else (0, 0.0)
        refused = {o: outcomes.count(o) for o in set(outcomes) if o != "ACCEPT"}
        return {
            "answers": len(waiting),
            "refused": len(waiting) - len(accepted),
            "refused_as": refused,
            "recorded": len(accepted),
            "carried_on": done,
            "lost": len(accepted) - done,
            "answered_s": answered,
            "all_done_s": answered + took,
        }


def phase(name: str, runs: int) -> dict[str, Any]:
    stock = name == "form-stock"
    prefect = start_prefect(f"prefect-{name}", stock)
    bench = Bench(runs, prefect, name)
    try:
        print(f"{name}: {'Prefect SQLite as shipped' if stock else 'Prefect as aisoar up runs it'}")
        waiting = bench.waiting_runs()
        return bench.click_all(waiting) if name == "slack" else bench.form_all(waiting)
    finally:
        bench.stop()
        prefect.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--phases", default="slack,form,form-stock")
    args = parser.parse_args()
    results = {name: phase(name, args.runs) for name in args.phases.split(",")}
    titles = {
        "slack": "Slack clicks -> ingress (aisoar up)",
        "form": "UI form -> Prefect resume (aisoar up)",
        "form-stock": "UI form -> Prefect resume (stock SQLite)",
    }
    print()
    print(
        f"{'N concurrent approvals':42} {'answers':>8} {'refused':>8} {'lost':>6} {'answered s':>11} {'all done s':>11}"
    )
    for name, r in results.items():
        print(
            f"{titles[name]:42} {r['answers']:>8} {r['refused']:>8} {r['lost']:>8} "
            f"{r['answered_s']:>11.1f} {r['all_done_s']:>11.1f}"
        )
        if r.get("refused_as"):
            print(f"{'':42} refused as: {r['refused_as']}")
    (HERE / "approvals.last.json").write_text(json.dumps(results, indent=2))
    return 0 if all(r["lost"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
