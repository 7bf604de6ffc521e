"""An aisoar stack for end-to-end tests: ingress and runtime in this process, against the
session's Prefect server and the sandbox fakes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from aisoar.config import PROJECT_ROOT, Settings
from aisoar.ingress.app import create_app
from aisoar.ingress.auth import signed_headers
from aisoar.ingress.dispatch import Dispatcher
from flows.runtime import PlaybookRuntime
from flows.services import Services, build_services
from sandbox.serving import BackgroundServer
from sandbox.stack import SLACK_INTERACTIVITY_PATH, Sandbox
from tests.conftest import READ, WEBHOOK_SECRET, make_settings

SAMPLE: dict[str, Any] = json.loads((PROJECT_ROOT / "examples/alerts/leaked-openai-key.json").read_text())
ALL_CONNECTORS = ("litellm", "openai", "slack", "jira")


@dataclass
class Stack:
    settings: Settings
    svc: Services
    runtime: PlaybookRuntime
    sandbox: Sandbox
    server: BackgroundServer = field(repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)  # the sandbox's AISOAR_* settings

    @property
    def ingress(self) -> str:
        return self.server.url

    def fire(self, alert: dict[str, Any]) -> str:
        body = json.dumps(alert).encode()
        response = httpx.post(
            f"{self.ingress}/webhooks/generic", content=body, headers=signed_headers(WEBHOOK_SECRET, body), timeout=10
        )
        assert response.status_code == 202, response.text
        return str(response.json()["alert_id"])

    def dispatched(self, alert_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = httpx.get(f"{self.ingress}/alerts/{alert_id}", headers=READ, timeout=5).json()
            if status["status"] == "dispatched" and status["flow_runs"]:
                return status
            time.sleep(0.05)
        raise AssertionError(f"alert {alert_id} was not dispatched: {status}")

    def stop(self) -> None:
        self.server.stop()
        self.runtime.stop()


def start_stack(
    sandbox: Sandbox, data_dir: Path, connectors: tuple[str, ...] = ALL_CONNECTORS, **overrides: object
) -> Stack:
    env = sandbox.start(connectors)
    settings = make_settings(data_dir, env=env, **overrides)
    svc = build_services(settings)
    runtime = PlaybookRuntime(svc)
    runtime.start()
    dispatcher = Dispatcher(
        svc.store, list(svc.specs.values()), runtime, timedelta(hours=1), owner=runtime.owner, lease=runtime.stale_after
    )
    app = create_app(
        settings,
        svc.store,
        dispatcher,
        desk=runtime.desk,
        evidence=svc.evidence,
        prefect_problem=runtime.prefect_problem,
    )
    server = BackgroundServer(app).start()
    sandbox.set_slack_request_url(f"{server.url}{SLACK_INTERACTIVITY_PATH}")
    return Stack(settings, svc, runtime, sandbox, server, env)
