"""Paging through the PagerDuty Events API v2 stand-in: one PagerDuty alert per incident."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from aisoar.config import PROJECT_ROOT
from aisoar.evidence import EvidenceStore
from aisoar.ingress.adapters import generic_json
from aisoar.models import Severity
from aisoar.store import Store
from connectors.errors import ConnectorError
from connectors.pagerduty import PagerDutyEvents
from sandbox.stack import Sandbox
from tasks import REGISTRY
from tasks.base import ActionContext, Outcome
from tasks.pagerduty import PageInputs
from tests import matrix
from tests.conftest import make_settings
from tests.faults import fault_proxy


def test_trigger_acknowledge_resolve_by_dedup_key(sandbox: Sandbox) -> None:
    env = sandbox.start(("pagerduty",))
    pager = PagerDutyEvents(env["AISOAR_PAGERDUTY_URL"], env["AISOAR_PAGERDUTY_ROUTING_KEY"])
    assert pager.trigger("INC-1", "key leaked", "aisoar/test", "error", "http://ui/run") == "INC-1"
    assert pager.trigger("INC-1", "key leaked (again)", "aisoar/test", "error", None) == "INC-1"
    assert list(sandbox.pagerduty.alerts) == ["INC-1"]  # paging twice is one PagerDuty alert
    assert sandbox.pagerduty.alerts["INC-1"]["events"] == 2
    pager.acknowledge("INC-1")
    assert sandbox.pagerduty.alerts["INC-1"]["status"] == "acknowledged"
    pager.resolve("INC-1")
    pager.resolve("INC-1")
    assert sandbox.pagerduty.alerts["INC-1"]["status"] == "resolved"


def test_a_wrong_routing_key_is_a_clear_error_without_retries(sandbox: Sandbox) -> None:
    env = sandbox.start(("pagerduty",))
    pager = PagerDutyEvents(env["AISOAR_PAGERDUTY_URL"], "0" * 32, backoff=0.01)
    with pytest.raises(ConnectorError) as caught:
        pager.trigger("INC-2", "x", "aisoar/test", "info", None)
    assert str(caught.value).startswith("PagerDuty trigger event on INC-2 failed (HTTP 400)")
    assert "routing_key" in str(caught.value)
    assert sandbox.pagerduty.events == []


def test_the_action_pages_for_the_incident(sandbox: Sandbox, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", env=sandbox.start(("pagerduty",)))
    store = Store(settings.store_url)
    alert = generic_json("generic", (PROJECT_ROOT / "examples/alerts/leaked-openai-key.json").read_bytes())
    store.accept_alert(alert, "delivery")
    incident_id, _ = store.correlate(alert, alert.incident_type, Severity.critical, timedelta(hours=1))
    ctx = ActionContext(
        incident_id, "leaked-llm-api-key", "page", None, settings, store, EvidenceStore(settings.evidence_dir, store)
    )
    page = REGISTRY["pagerduty.page_oncall"].task.fn
    outcome = page(ctx, PageInputs())
    assert outcome.status is Outcome.ok and outcome.output["dedup_key"] == incident_id
    sent = sandbox.pagerduty.events[0]
    assert sent["payload"]["severity"] == "critical" and incident_id in sent["payload"]["summary"]


def test_without_a_routing_key_the_step_is_skipped(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    store = Store(settings.store_url)
    ctx = ActionContext("INC-x", "p", "page", None, settings, store, EvidenceStore(settings.evidence_dir, store))
    skipped = REGISTRY["pagerduty.page_oncall"].task.fn(ctx, PageInputs())
    assert skipped.name == "Not configured" and "AISOAR_PAGERDUTY_ROUTING_KEY" in skipped.message


def test_pagerduty_matrix_through_a_fault_proxy(sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env = sandbox.start(("pagerduty",))
    routing_key = env["AISOAR_PAGERDUTY_ROUTING_KEY"]
    with fault_proxy(env["AISOAR_PAGERDUTY_URL"]) as (proxy, url):
        pager = PagerDutyEvents(url, routing_key, timeout=5.0, attempts=3, backoff=0.01)
        slow = PagerDutyEvents(url, routing_key, timeout=0.5, attempts=3, backoff=0.01)  # for the timeout check only
        key = matrix.retry_after_then_success(
            proxy, "enqueue", lambda: pager.trigger("INC-9", "leak", "aisoar/test", "critical", None)
        )
        assert key == "INC-9" and sandbox.pagerduty.alerts["INC-9"]["events"] == 1  # the 429 was not counted
        storm = matrix.storm_exhausts_retries(
            proxy,
            "enqueue",
            lambda: pager.resolve("INC-9"),
            attempts=3,
            starts_with="PagerDuty resolve event on INC-9 failed (HTTP 500)",
        )
        assert sandbox.pagerduty.alerts["INC-9"]["status"] == "triggered"
        matrix.times_out(proxy, "enqueue", lambda: slow.acknowledge("INC-9"), attempts=3, delay=1.5)
        proxy.script()
        pager.resolve("INC-9")  # the inverse of trigger, and doing it twice is harmless
        pager.resolve("INC-9")
        assert sandbox.pagerduty.alerts["INC-9"]["status"] == "resolved"
    plan = PagerDutyEvents(env["AISOAR_PAGERDUTY_URL"], routing_key, plan=True)

    def state() -> str:
        return json.dumps([sandbox.pagerduty.alerts, sandbox.pagerduty.events], sort_keys=True)

    planned = matrix.plan_changes_nothing(lambda: plan.trigger("INC-9", "x", "s", "info", None), state, "trigger")
    matrix.secret_absent(routing_key, caplog.text, str(storm), str(planned), key)


def test_the_action_in_plan_mode_pages_nobody(sandbox: Sandbox, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", env=sandbox.start(("pagerduty",)), plan_mode=True)
    store = Store(settings.store_url)
    alert = generic_json("generic", (PROJECT_ROOT / "examples/alerts/leaked-openai-key.json").read_bytes())
    store.accept_alert(alert, "delivery")
    incident_id, _ = store.correlate(alert, alert.incident_type, Severity.critical, timedelta(hours=1))
    ctx = ActionContext(
        incident_id, "leaked-llm-api-key", "page", None, settings, store, EvidenceStore(settings.evidence_dir, store)
    )
    planned = REGISTRY["pagerduty.page_oncall"].task.fn(ctx, PageInputs())
    assert planned.name == "Planned" and "trigger event" in planned.message
    assert sandbox.pagerduty.events == []
