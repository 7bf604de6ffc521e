"""Incident metrics end to end: a leaked key that spent money for ten minutes before its alert,
blocked, then deleted after a responder's approval and closed. Its four durations come from its
record: `aisoar metrics`, the Prefect table artifact refreshed at the close, and `/metrics`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from aisoar.config import PROJECT_ROOT
from aisoar.metrics import all_milestones, milestones
from cli.prefect_server import PrefectServer
from sandbox.stack import DEMO_SECRET, Sandbox
from tests import prefect_api
from tests.conftest import API_TOKEN
from tests.stack import SAMPLE, Stack, start_stack

pytestmark = pytest.mark.e2e


@pytest.fixture()
def stack(prefect_server: PrefectServer, sandbox: Sandbox, tmp_path: Path) -> Iterator[Stack]:
    started = start_stack(sandbox, tmp_path / "data")
    yield started
    started.stop()


def test_the_four_durations_and_the_spend_come_from_the_record(stack: Stack) -> None:
    from tests.test_playbooks import run_playbook

    token = hashlib.sha256(DEMO_SECRET.encode()).hexdigest()
    gateway = stack.sandbox.litellm
    gateway.add_spend_log(token, "gpt-4o", spend=5.0)["startTime"] = "2020-01-01T00:00:00+00:00"  # before the leak
    for _ in range(3):  # after the leak: the abuse
        gateway.add_spend_log(token, "gpt-4o", spend=1.25)
    leaked = datetime.now(UTC) - timedelta(minutes=10)
    alert = {**SAMPLE, "id": "gh-secret-77", "occurred_at": leaked.isoformat()}
    incident_id = run_playbook(stack, alert, "leaked-llm-api-key")
    store = stack.svc.store
    incident = store.get_incident(incident_id)
    assert incident.status.value == "closed"
    found = milestones(store, incident)
    assert found.occurred is not None and abs((found.occurred - leaked).total_seconds()) < 1
    assert found.acknowledged is not None and found.ack_by and "approve via prefect-ui" in found.ack_by
    assert found.detected <= found.contained <= found.acknowledged <= found.closed  # type: ignore[operator]
    seconds = found.seconds()
    assert 595 <= seconds["mttd"] <= 700, seconds  # type: ignore[operator]
    assert all(seconds[m] is not None for m in ("mtta", "mttc", "mttr")), seconds
    assert seconds["mttc"] < seconds["mtta"] <= seconds["mttr"]  # type: ignore[operator]
    # The first log row is from before the leak (not its damage); the three after it are.
    (counted,) = [m for m in all_milestones(store) if m.incident_id == incident_id]
    assert counted.spend_usd == pytest.approx(3.75), counted.spend_usd

    # The table artifact, refreshed at the close.
    table = prefect_api.artifact("incident-metrics")
    assert table is not None and table["type"] == "table"
    rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    (row,) = [r for r in rows if r["incident"] == incident_id]
    assert row["time to detect"].endswith("min") and row["key spend since the leak (USD)"] == "3.75"

    # The terminal, as a responder reads it.
    env = {**os.environ, "AISOAR_DATA_DIR": str(stack.settings.data_dir), "AISOAR_SANDBOX": "false"}
    shown = subprocess.run(
        [sys.executable, "-m", "cli.main", "metrics", "--by", "playbook"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    for heading in ("time to detect", "time to acknowledge", "time to contain", "time to recover"):
        assert heading in shown.stdout
    assert incident_id in shown.stdout and "playbook=leaked-llm-api-key  incidents=1" in shown.stdout

    # Prometheus: a summary per measure, type and severity.
    scraped = httpx.get(f"{stack.ingress}/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"}).text
    kind = incident.type.value if incident.type else "unclassified"
    for measure in ("mttd", "mtta", "mttc", "mttr"):
        labels = f'incident_type="{kind}",measure="{measure}",severity="{incident.severity.value}"'
        line = f"aisoar_incident_seconds_count{{{labels}}} 1.0"
        assert line in scraped, [s for s in scraped.splitlines() if s.startswith("aisoar_incident_seconds")]
    assert f'aisoar_leaked_key_spend_usd{{incident_type="{kind}"}} 3.75' in scraped


def test_an_acknowledgement_stops_the_time_to_acknowledge(stack: Stack) -> None:
    status = stack.dispatched(stack.fire({**SAMPLE, "id": "gh-secret-78"}))
    incident_id = str(status["incident_id"])
    env = {**os.environ, "AISOAR_DATA_DIR": str(stack.settings.data_dir), "AISOAR_SANDBOX": "false"}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "ack", incident_id, "--by", "alice"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found = milestones(stack.svc.store, stack.svc.store.get_incident(incident_id))
    assert found.ack_by == "alice" and found.seconds()["mtta"] is not None
