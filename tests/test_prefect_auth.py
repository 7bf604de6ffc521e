"""The Prefect server is locked with Prefect's own basic authentication: without the credential
nobody creates, changes, resumes or reads a run; `aisoar up` makes the credential once (mode
0600), reuses it, starts its server with it and gives it to its own client; `aisoar serve`
refuses a Cloud key and a server that refuses it; the UI asks for the credential."""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from aisoar.case import run_url
from cli.main import _start_prefect, local_prefect_server
from cli.prefect_auth import CredentialError, basic_auth, credential, credential_file
from cli.prefect_server import PrefectServer
from sandbox.serving import free_port
from tests import prefect_api
from tests.test_ui import CHROMIUM, FLAGS, login

UNAUTHORIZED = {"exception_message": "Unauthorized"}


def call(method: str, path: str, headers: dict[str, str] | None, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{prefect_api.api()}{path}", headers=headers, timeout=10, **kwargs)


WRONG = {
    "no credential": None,
    "a wrong password": basic_auth("aisoar:not-the-password"),
    "a bearer token (Prefect Cloud's scheme)": {"Authorization": f"Bearer {os.environ['PREFECT_API_AUTH_STRING']}"},
    "the credential not base64-encoded": {"Authorization": f"Basic {os.environ['PREFECT_API_AUTH_STRING']}"},
}


@pytest.fixture()
def flow_id(prefect_server: PrefectServer) -> str:
    found: dict[str, Any] = prefect_api._call("POST", "/flows/", json={"name": "auth-check"})
    return str(found["id"])


@pytest.mark.parametrize("sent", list(WRONG))
def test_without_the_credential_nothing_about_runs_is_allowed(flow_id: str, sent: str) -> None:
    ours = prefect_api.headers()
    run = call("POST", "/flow_runs/", ours, json={"flow_id": flow_id, "name": "locked"}).json()
    paused = {"type": "PAUSED", "name": "Awaiting approval", "state_details": {"pause_reschedule": False}}
    assert call("POST", f"/flow_runs/{run['id']}/set_state", ours, json={"state": paused, "force": True}).is_success
    headers = WRONG[sent]

    attempts = {
        "create a run": call("POST", "/flow_runs/", headers, json={"flow_id": flow_id, "name": "intruder"}),
        "set a state": call(
            "POST", f"/flow_runs/{run['id']}/set_state", headers, json={"state": {"type": "CANCELLED"}, "force": True}
        ),
        "resume": call("POST", f"/flow_runs/{run['id']}/resume", headers, json={"run_input": {"approve": True}}),
        "read a run": call("GET", f"/flow_runs/{run['id']}", headers),
        "list runs": call("POST", "/flow_runs/filter", headers, json={}),
        "delete a run": call("DELETE", f"/flow_runs/{run['id']}", headers),
    }
    assert {what: (r.status_code, r.json()) for what, r in attempts.items()} == {
        what: (401, UNAUTHORIZED) for what in attempts
    }
    # Nothing changed: the run still waits, and no other run was made.
    assert prefect_api.flow_run(run["id"])["state"]["name"] == "Awaiting approval"
    listed = prefect_api._call("POST", "/flow_runs/filter", json={"flows": {"id": {"any_": [flow_id]}}})
    assert "intruder" not in [r["name"] for r in listed]


def test_with_the_credential_the_same_calls_work(flow_id: str) -> None:
    ours = prefect_api.headers()
    created = call("POST", "/flow_runs/", ours, json={"flow_id": flow_id, "name": "approved"})
    assert created.status_code == 201
    run_id = created.json()["id"]
    paused = {"type": "PAUSED", "name": "Awaiting approval", "state_details": {"pause_reschedule": False}}
    changed = call("POST", f"/flow_runs/{run_id}/set_state", ours, json={"state": paused, "force": True})
    assert changed.status_code == 201 and changed.json()["status"] == "ACCEPT", changed.text
    resumed = call("POST", f"/flow_runs/{run_id}/resume", ours, json={})
    assert resumed.status_code == 201 and resumed.json()["status"] == "ACCEPT", resumed.text
    read = call("GET", f"/flow_runs/{run_id}", ours)
    assert read.status_code == 200 and read.json()["state"]["type"] == "RUNNING"
    assert run_id in [r["id"] for r in call("POST", "/flow_runs/filter", ours, json={}).json()]
    # httpx's own basic auth (curl -u "$(cat prefect-auth)") is the same header.
    user, password = os.environ["PREFECT_API_AUTH_STRING"].split(":", 1)
    assert httpx.get(f"{prefect_api.api()}/flow_runs/{run_id}", auth=(user, password), timeout=10).status_code == 200


def test_only_health_readiness_and_the_ui_shell_are_open(prefect_server: PrefectServer) -> None:
    assert httpx.get(f"{prefect_server.api_url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{prefect_server.api_url}/ready", timeout=10).status_code == 200
    assert httpx.get(f"{prefect_server.api_url}/version", timeout=10).status_code == 401
    assert httpx.get(f"{prefect_server.api_url}/admin/version", timeout=10).status_code == 401
    ui_settings = httpx.get(f"{prefect_server.url}/ui-settings", timeout=10).json()  # tells the UI to ask
    assert ui_settings["auth"] == "BASIC"
    page = httpx.get(f"{prefect_server.url}/runs/flow-run/x", headers={"Accept": "text/html"}, timeout=10)
    assert page.status_code == 200 and "<html" in page.text  # the app's files; its data needs the credential


def test_the_credential_is_made_once_0600_and_reused(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # whatever the umask, the file is the owner's alone
    try:
        made = credential(tmp_path)
    finally:
        os.umask(old_umask)
    path = tmp_path / "prefect-auth"
    assert made.path == credential_file(tmp_path) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert re.fullmatch(r"aisoar:[A-Za-z0-9_-]{32}", made.auth_string) and made.user == "aisoar"
    assert path.read_text() == made.auth_string + "\n"
    assert made.replaced is None
    again = credential(tmp_path)
    assert again.auth_string == made.auth_string and again.replaced is None
    assert [p.name for p in tmp_path.iterdir()] == ["prefect-auth"]  # nothing left behind
    # Deleting the file rotates it.
    path.unlink()
    assert credential(tmp_path).auth_string != made.auth_string


def test_a_credential_file_others_can_read_is_replaced(tmp_path: Path) -> None:
    first = credential(tmp_path)
    first.path.chmod(0o644)
    second = credential(tmp_path)
    assert second.auth_string != first.auth_string  # the old one may be known
    assert second.replaced and "mode 644" in second.replaced
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert credential(tmp_path).auth_string == second.auth_string


def test_a_credential_of_ones_own_choice_is_kept_and_a_wrong_file_refused(tmp_path: Path) -> None:
    path = credential_file(tmp_path)
    path.write_text("ops:a-long-passphrase-of-our-own\n")
    path.chmod(0o600)
    assert credential(tmp_path).auth_string == "ops:a-long-passphrase-of-our-own"
    for bad in ("", "no-colon-s3cret", ":s3cret-without-user", "s3cret-user:", "user:s3cret with spaces"):
        path.write_text(bad)
        with pytest.raises(CredentialError, match="does not hold one user:password") as refused:
            credential(tmp_path)
        assert "s3cret" not in str(refused.value)  # never echoes what may be a password
    path.unlink()
    (tmp_path / "elsewhere").write_text("aisoar:x\n")
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CredentialError, match="delete it"):
        credential(tmp_path)


@pytest.fixture()
def client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_start_prefect` points this process's Prefect client at the new server; put it back after."""
    for key in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING"):
        monkeypatch.setenv(key, os.environ[key])


@pytest.mark.usefixtures("client_env")
def test_aisoar_up_starts_its_server_locked_with_the_data_dirs_credential(tmp_path: Path) -> None:
    """What `aisoar up` does (cli/main.py cmd_up): the data dir's credential, the server started
    with it, this process's client given it."""
    data = tmp_path / "data"
    login = credential(data)
    with ExitStack() as running:
        server = _start_prefect(local_prefect_server(data, login, free_port()), running)
        assert server.auth_string == login.auth_string == credential_file(data).read_text().strip()
        assert os.environ["PREFECT_API_URL"] == server.api_url
        assert os.environ["PREFECT_API_AUTH_STRING"] == login.auth_string
        url = f"{server.api_url}/flow_runs/filter"
        assert httpx.post(url, json={}, timeout=10).status_code == 401
        assert httpx.post(url, json={}, headers=server.headers, timeout=10).status_code == 200
        assert server.headers == {"Authorization": "Basic " + base64.b64encode(login.auth_string.encode()).decode()}
    assert server.process is not None and server.process.poll() is not None  # stopped with `running`
    assert credential(data).auth_string == login.auth_string  # the next start uses the same


def serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`aisoar serve` against the session's server, with ``env`` in place of the Prefect client's settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_KEY", "PREFECT_API_AUTH"))}
    base |= {"PREFECT_HOME": str(tmp_path / "home"), "AISOAR_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "serve"],
        env=base | env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.usefixtures("prefect_server")
def test_aisoar_serve_refuses_a_cloud_key_and_a_credential_the_server_refuses(tmp_path: Path) -> None:
    ours = os.environ["PREFECT_API_AUTH_STRING"]
    keyed = serve(tmp_path, PREFECT_API_KEY="pnu_0123456789", PREFECT_API_AUTH_STRING=ours)
    assert keyed.returncode == 2 and "PREFECT_API_KEY is set" in keyed.stderr, keyed.stderr
    missing = serve(tmp_path)
    assert missing.returncode == 2, missing.stderr
    assert "asks for credentials (401): set PREFECT_API_AUTH_STRING" in missing.stderr
    wrong = serve(tmp_path, PREFECT_API_AUTH_STRING="aisoar:not-the-password")
    assert wrong.returncode == 2 and "refuses PREFECT_API_AUTH_STRING (401)" in wrong.stderr, wrong.stderr
    assert "not-the-password" not in wrong.stderr + wrong.stdout


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


@pytest.mark.e2e
def test_the_ui_asks_for_the_credential_once(browser: Browser, prefect_server: PrefectServer, flow_id: str) -> None:
    run = prefect_api._call("POST", "/flow_runs/", json={"flow_id": flow_id, "name": "seen-in-the-ui"})
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # The root opens the classic UI (the V2 UI is off: cli/prefect_server.py), which asks first;
    # a wrong string is refused.
    login(page, prefect_server, auth_string="aisoar:not-the-password")
    expect(page.get_by_text("Authentication failed.").first).to_be_visible(timeout=15_000)
    expect(page).to_have_url(re.compile(r"/login\?redirect=/dashboard$"))
    expect(page.get_by_placeholder("admin:pass")).to_be_visible()
    login(page, prefect_server)
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    expect(page.get_by_role("heading", name="Flow Runs")).to_be_visible(timeout=30_000)
    expect(page.get_by_text(re.compile(r"^\d+$")).first).to_be_visible()  # its data came through: the counts
    expect(page.get_by_placeholder("admin:pass")).to_have_count(0)
    # Asked once: the run page, where aisoar's links go, needs no second login.
    page.goto(f"{prefect_server.url}/runs/flow-run/{run['id']}")
    expect(page.get_by_text("seen-in-the-ui").first).to_be_visible(timeout=30_000)
    expect(page.get_by_placeholder("admin:pass")).to_have_count(0)
    page.close()
    # A browser that has not logged in gets the prompt, then the page it asked for.
    fresh = browser.new_page(viewport={"width": 1400, "height": 1000})
    fresh.goto(f"{prefect_server.url}/dashboard")
    expect(fresh.get_by_placeholder("admin:pass")).to_be_visible(timeout=30_000)
    expect(fresh).to_have_url(re.compile(r"/login\?redirect=/dashboard"))
    fresh.get_by_placeholder("admin:pass").fill(prefect_server.auth_string or "")
    fresh.get_by_role("button", name="Login").click()
    expect(fresh).to_have_url(re.compile(r"/dashboard$"), timeout=30_000)
    fresh.close()


@pytest.mark.e2e
@pytest.mark.xfail(
    strict=True,
    reason="Prefect 3.9.1's classic UI shows its 404 page (and 'Authentication failed.'), not the login prompt, "
    "for a run page opened before logging in: the links aisoar sends (aisoar/case.py run_url) dead-end there",
)
def test_a_run_link_opened_before_logging_in_asks_for_the_credential(
    browser: Browser, prefect_server: PrefectServer, flow_id: str
) -> None:
    run = prefect_api._call("POST", "/flow_runs/", json={"flow_id": flow_id, "name": "linked-from-slack"})
    fresh = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        fresh.goto(run_url(prefect_server.url, run["id"]))
        expect(fresh.get_by_placeholder("admin:pass")).to_be_visible(timeout=15_000)
        fresh.get_by_placeholder("admin:pass").fill(prefect_server.auth_string or "")
        fresh.get_by_role("button", name="Login").click()
        expect(fresh.get_by_text("linked-from-slack").first).to_be_visible(timeout=30_000)
    finally:
        fresh.close()
