"""The Prefect UI's "Awaiting approval" saved search (flows/console.py): the runtime makes it
when it starts, once however often it starts, and it lists exactly the runs waiting for an
approval, those that have waited longer than the Runs page's default week too; a responder
picks it on the Runs page of the classic UI, or opens its URL."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from prefect.client.orchestration import get_client

from cli.prefect_server import PrefectServer
from flows.approvals import AWAITING_APPROVAL
from flows.console import AWAITING_APPROVAL_SEARCH, SPAN_SECONDS, ensure_saved_searches, waiting_runs_url
from flows.runtime import PlaybookRuntime
from flows.services import build_services
from tests import prefect_api
from tests.conftest import make_settings
from tests.test_ui import CHROMIUM, FLAGS, login

WAITING = {"type": "PAUSED", "name": AWAITING_APPROVAL, "state_details": {"pause_reschedule": True}}
NOT_WAITING: dict[str, list[dict[str, Any]]] = {
    "paused": [{"type": "RUNNING"}, {"type": "PAUSED", "name": "Paused"}],  # a plain Prefect pause
    "suspended": [{"type": "RUNNING"}, {"type": "PAUSED", "name": "Suspended"}],  # no form yet
    "resuming": [{"type": "RUNNING"}, WAITING, {"type": "SCHEDULED", "name": "Resuming"}],  # answered
    "contained": [{"type": "RUNNING"}, {"type": "COMPLETED", "name": "Contained"}],
}


def saved() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = prefect_api._call("POST", "/saved_searches/filter", json={})
    return [s for s in found if s["name"] == AWAITING_APPROVAL_SEARCH]


def make_run(flow_id: str, name: str, states: list[dict[str, Any]], scheduled: datetime | None = None) -> str:
    first: dict[str, Any] = {"type": "PENDING"}
    if scheduled is not None:  # its start time, until it runs
        first = {"type": "SCHEDULED", "state_details": {"scheduled_time": scheduled.isoformat()}}
    run = prefect_api._call("POST", "/flow_runs/", json={"flow_id": flow_id, "name": name, "state": first})
    for state in states:
        result = prefect_api._call("POST", f"/flow_runs/{run['id']}/set_state", json={"state": state, "force": True})
        assert result["status"] == "ACCEPT", result
    return str(run["id"])


@pytest.fixture()
def runs(prefect_server: PrefectServer) -> Iterator[dict[str, str]]:
    """Runs in every state a playbook run passes through, one waiting for 400 days (named
    with this test's tag: other tests of the session leave runs of their own); deleted after."""
    tag = uuid.uuid4().hex[:6]
    flow_id = prefect_api._call("POST", "/flows/", json={"name": "console-check"})["id"]
    made = {f"waiting-{tag}": make_run(flow_id, f"waiting-{tag}", [{"type": "RUNNING"}, WAITING])}
    long_ago = datetime.now(UTC) - timedelta(days=400)
    made[f"waiting-since-last-year-{tag}"] = make_run(flow_id, f"waiting-since-last-year-{tag}", [WAITING], long_ago)
    for what, states in NOT_WAITING.items():
        made[f"{what}-{tag}"] = make_run(flow_id, f"{what}-{tag}", states)
    yield made
    for run_id in made.values():
        httpx.delete(f"{prefect_api.api()}/flow_runs/{run_id}", headers=prefect_api.headers(), timeout=10)


def all_waiting() -> dict[str, str]:
    """Every run of the server waiting for an approval, whenever it started: name -> id."""
    found = prefect_api.filter_runs({"flow_runs": {"state": {"name": {"any_": [AWAITING_APPROVAL]}}}, "limit": 200})
    return {r["name"]: r["id"] for r in found}


def ui_request(search: dict[str, Any]) -> dict[str, Any]:
    """The body the classic UI sends to /api/flow_runs/paginate for a saved search (Prefect
    3.9.1's bundle: state names -> flow_runs.state.name, a span -> start_time after/before,
    a filter on the start time or, for a run not started, its scheduled time)."""
    by = {f["property"]: f["value"] for f in search["filters"] if f["object"] == "flowRun"}
    assert by["range"]["type"] == "span"
    now = datetime.now(UTC)
    return {
        "flow_runs": {
            "state": {"name": {"any_": by["state"]}},
            "start_time": {
                "after_": (now + timedelta(seconds=by["range"]["seconds"])).isoformat(),
                "before_": now.isoformat(),
            },
        },
        "sort": "START_TIME_DESC",
        "limit": 200,
    }


def test_the_saved_search_is_made_once_and_selects_exactly_the_waiting_runs(runs: dict[str, str]) -> None:
    with get_client(sync_client=True) as client:
        assert ensure_saved_searches(client) == [AWAITING_APPROVAL_SEARCH]
        first = saved()
        assert ensure_saved_searches(client) == [AWAITING_APPROVAL_SEARCH]  # a second start
    assert len(saved()) == 1 and saved()[0]["id"] == first[0]["id"]
    search = saved()[0]
    filters = {(f["object"], f["property"]): f["value"] for f in search["filters"]}
    assert filters == {
        ("flowRun", "state"): ["Awaiting approval"],  # the state's name: Prefect's type is PAUSED
        ("flowRun", "range"): {"type": "span", "seconds": -SPAN_SECONDS},
    }
    selected = {r["name"] for r in prefect_api.filter_runs(ui_request(search))}
    assert selected == set(all_waiting())
    mine = {name for name in runs if name.startswith("waiting")}
    assert mine <= selected and not (set(runs) - mine) & selected
    # The Runs page's default (the past week) would not show the one waiting since last year.
    week = datetime.now(UTC) - timedelta(days=7)
    last_week = prefect_api.filter_runs(
        {"flow_runs": {"state": {"name": {"any_": [AWAITING_APPROVAL]}}, "start_time": {"after_": week.isoformat()}}}
    )
    assert not {name for name in runs if "last-year" in name} & {r["name"] for r in last_week}


def test_the_runtime_puts_the_saved_search_back_when_it_starts(prefect_server: PrefectServer, tmp_path: Path) -> None:
    for search in saved():
        url = f"{prefect_api.api()}/saved_searches/{search['id']}"
        httpx.delete(url, headers=prefect_api.headers(), timeout=10).raise_for_status()
    assert saved() == []
    runtime = PlaybookRuntime(build_services(make_settings(tmp_path / "data")))
    runtime.start()
    try:
        assert [s["name"] for s in saved()] == [AWAITING_APPROVAL_SEARCH]
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert shutil.which("chromium"), "Debian's chromium is needed for the UI tests (.ci/run installs it)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


def listed(page: Page, count: int) -> set[str]:
    """The runs the Runs page lists, once it says how many."""
    expect(page.get_by_text(re.compile(rf"^{count} runs?$"))).to_be_visible(timeout=30_000)
    return set(page.locator("a[href*='/runs/flow-run/']").all_inner_texts())


@pytest.mark.e2e
def test_on_the_runs_page_the_saved_search_lists_the_waiting_runs(
    browser: Browser, prefect_server: PrefectServer, runs: dict[str, str]
) -> None:
    with get_client(sync_client=True) as client:
        ensure_saved_searches(client)
    waiting = set(all_waiting())
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    login(page, prefect_server)
    page.goto(f"{prefect_server.url}/runs")
    chooser = page.locator(".p-select-button").filter(has_text="Past week (default)")  # the saved searches
    expect(chooser).to_be_visible(timeout=30_000)
    chooser.locator(".p-select-button__icon").click()  # the arrow: a click in the box does not open it
    page.get_by_role("option", name=AWAITING_APPROVAL_SEARCH, exact=True).click()
    assert listed(page, len(waiting)) == waiting
    assert {name for name in runs if name.startswith("waiting")} <= waiting
    # Its URL opens the same list, with the saved search chosen.
    url = waiting_runs_url(prefect_server.url)
    assert (urlsplit(page.url).path, parse_qs(urlsplit(page.url).query)) == (
        "/runs",
        {"seconds": [str(-SPAN_SECONDS)], "type": ["span"], "state": ["Awaiting approval"]},
    )
    assert page.url == url
    fresh = browser.new_page(viewport={"width": 1280, "height": 800})
    login(fresh, prefect_server)
    fresh.goto(url)
    expect(fresh.locator(".p-select-button").first).to_have_text(AWAITING_APPROVAL_SEARCH, timeout=30_000)
    assert listed(fresh, len(waiting)) == waiting
    page.close()
    fresh.close()
