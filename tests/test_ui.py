"""A responder in the Prefect UI (real Chromium, headless): the run waits with a clear
approval form; ticking approve and submitting lets the playbook finish."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from cli.prefect_server import PrefectServer
from sandbox.stack import DEMO_KEY_ID, DEMO_PROJECT
from tests import prefect_api
from tests.stack import SAMPLE, Stack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert shutil.which("chromium"), "Debian's chromium is needed for the UI tests (.ci/run installs it)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


def open_run(browser: Browser, prefect_server: PrefectServer, run_id: str) -> Page:
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(f"{prefect_server.url}/runs/flow-run/{run_id}")
    return page


def left_paused(run_id: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if prefect_api.flow_run(run_id)["state"]["type"] != "PAUSED":
            return True
        time.sleep(0.2)
    return False


def submit(page: Page, run_id: str, fill: Callable[[Locator], None], first: Locator | None = None) -> None:
    """Submit the resume form (``first``: a dialog already open and checked) as a responder
    does: when the UI's resume is not taken (the Prefect server on SQLite answers some resumes
    503 "database is locked", docs/architecture.md), reload and submit again. Says so."""
    for attempt in range(1, 4):
        dialog = first
        if dialog is None:
            page.get_by_role("button", name="Resume").click()
            dialog = page.get_by_role("dialog")
            expect(dialog.get_by_text("Approval needed", exact=False)).to_be_visible(timeout=30_000)
        first = None
        fill(dialog)
        dialog.get_by_role("button", name="Submit").click()
        if left_paused(run_id, timeout=15):
            return
        print(f"try {attempt}: the run did not take the resume from the UI; reloading and submitting again")
        page.reload()
        expect(page.get_by_text("Awaiting approval").first).to_be_visible(timeout=30_000)
    raise AssertionError(f"run {run_id} never took a resume from the UI")


def test_a_responder_approves_in_the_prefect_ui(stack: Stack, browser: Browser, prefect_server: PrefectServer) -> None:
    status = stack.dispatched(stack.fire(SAMPLE))
    run_id = status["flow_runs"]["leaked-llm-api-key"]
    prefect_api.wait_for_state(run_id, "PAUSED")
    page = open_run(browser, prefect_server, run_id)
    expect(page.get_by_text("Awaiting approval").first).to_be_visible(timeout=30_000)
    expect(page.get_by_text("AML.T0029").first).to_be_visible()

    page.get_by_role("button", name="Resume").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Approval needed: Delete the key at the provider")).to_be_visible(timeout=15_000)
    expect(dialog.get_by_text("openai.delete_project_key").first).to_be_visible()
    expect(dialog.get_by_text("key_id = key_sandbox_leaked", exact=False)).to_be_visible()
    expect(dialog.get_by_text("expires at", exact=False)).to_be_visible()
    expect(dialog.get_by_text("block-key-at-gateway: key blocked at the gateway (verified)")).to_be_visible()
    switch = dialog.get_by_role("switch")
    expect(switch).to_have_attribute("aria-checked", "false")  # approve defaults to no

    def approve(form: Locator) -> None:
        form.get_by_role("switch").click()
        textareas = form.locator("textarea")
        textareas.nth(0).fill("erin (incident commander)")
        textareas.nth(1).fill("confirmed in the UI")

    submit(page, run_id, approve, first=dialog)

    prefect_api.wait_for_state(run_id, "COMPLETED", timeout=30)
    assert DEMO_KEY_ID not in stack.sandbox.openai.projects[DEMO_PROJECT]
    approvals = stack.svc.store.approvals_for(status["incident_id"])
    assert [(a.status, a.decided_by, a.reason) for a in approvals] == [
        ("approved", "erin (incident commander)", "confirmed in the UI")
    ]
    page.reload()
    expect(page.get_by_text("Contained").first).to_be_visible(timeout=30_000)  # the run page says the outcome
    page.close()


def test_submitting_the_form_untouched_rejects(stack: Stack, browser: Browser, prefect_server: PrefectServer) -> None:
    status = stack.dispatched(stack.fire(SAMPLE))
    run_id = status["flow_runs"]["leaked-llm-api-key"]
    prefect_api.wait_for_state(run_id, "PAUSED")
    page = open_run(browser, prefect_server, run_id)
    expect(page.get_by_text("Awaiting approval").first).to_be_visible(timeout=30_000)
    submit(page, run_id, lambda form: None)  # untouched: approve stays off
    prefect_api.wait_for_state(run_id, "COMPLETED", timeout=30)
    assert DEMO_KEY_ID in stack.sandbox.openai.projects[DEMO_PROJECT]
    assert [a.status for a in stack.svc.store.approvals_for(status["incident_id"])] == ["rejected"]
    page.close()


def test_cancel_in_the_ui_is_a_recorded_rejection(
    stack: Stack, browser: Browser, prefect_server: PrefectServer
) -> None:
    status = stack.dispatched(stack.fire(SAMPLE))
    run_id = status["flow_runs"]["leaked-llm-api-key"]
    prefect_api.wait_for_state(run_id, "PAUSED")
    page = open_run(browser, prefect_server, run_id)
    expect(page.get_by_text("Awaiting approval").first).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Cancel").click()
    page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    deadline = time.monotonic() + 60
    while (state := prefect_api.flow_run(run_id)["state"])["type"] != "COMPLETED":  # Cancelled, then runs on
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    # The key stays blocked (verified), the deletion was not approved: Contained, rejection named.
    assert state["name"] == "Contained" and "approval rejected by a Prefect UI user who cancelled" in state["message"]
    assert DEMO_KEY_ID in stack.sandbox.openai.projects[DEMO_PROJECT]
    assert [a.status for a in stack.svc.store.approvals_for(status["incident_id"])] == ["rejected"]
    page.reload()
    expect(page.get_by_text("Contained").first).to_be_visible(timeout=30_000)
    page.close()
