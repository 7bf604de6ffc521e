"""Paging through the PagerDuty Events API v2 stand-in: one PagerDuty alert per incident."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from aisoar.config import PROJECT_ROOT
from aisoar.evidence import EvidenceStore
from aisoar.ingress.adapters import generic_json
from aisoar.models import Severity
from aisoar.sandbox.stack import Sandbox
from aisoar.store import Store
from connectors.errors import ConnectorError
from connectors.pagerduty import PagerDutyEvents
from tasks import REGISTRY
from tasks.base import ActionContext, Outcome
from tasks.paging import PageInputs
from tests.conftest import make_settings


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
    assert skipped.name == "Skipped" and "AISOAR_PAGERDUTY_ROUTING_KEY" in skipped.message
