"""`aisoar connectors [--check]`: every connector listed, configured or not, reachable or not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aisoar.sandbox.serving import free_port
from aisoar.sandbox.stack import Sandbox
from tasks import REGISTRY
from tasks.inventory import CONNECTORS, statuses
from tests.conftest import make_settings
from tests.docs import CONNECTORS_DOC

STAND_INS = ("litellm", "openai", "slack", "jira", "pagerduty", "anthropic", "qdrant", "agents")


def test_every_action_family_has_a_connector_entry() -> None:
    families = {name.split(".")[0] + "." for name in REGISTRY}
    covered = {prefix for entry in CONNECTORS for prefix in entry.action_prefixes}
    local = {"evidence.", "incident.", "http."}  # no external system, or one entry per configured endpoint
    assert families - local <= covered, f"actions without a connector entry: {families - local - covered}"


def test_unconfigured_connectors_name_their_settings(tmp_path: Path) -> None:
    listed = {s.name: s for s in statuses(make_settings(tmp_path / "data"))}
    assert set(listed) == {entry.name for entry in CONNECTORS}
    assert not listed["vault"].configured
    assert "AISOAR_VAULT_URL" in listed["vault"].detail and "AISOAR_VAULT_TOKEN" in listed["vault"].detail
    assert "vault.revoke_token_accessor" in listed["vault"].actions


def test_check_reaches_the_configured_ones_and_reports_the_rest(sandbox: Sandbox, tmp_path: Path) -> None:
    env = sandbox.start(STAND_INS)
    dead = f"http://127.0.0.1:{free_port()}"
    settings = make_settings(
        tmp_path / "data",
        env=env,
        http_timeout_seconds=1,
        vault_url=dead,
        vault_token="s.never-print-this-token",
        http_endpoints={"waf": {"url": dead}},
    )
    checked = {s.name: s for s in statuses(settings, check=True)}
    for name in STAND_INS:
        assert checked[name].reachable is True, (name, checked[name].detail)
    assert checked["vault"].reachable is False and "connection error" in checked["vault"].detail
    assert "never-print-this-token" not in checked["vault"].detail
    assert checked["http:waf"].reachable is False
    assert checked["chroma"].configured is False and checked["chroma"].reachable is None


def test_the_command_lists_them(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AISOAR_DATA_DIR": str(tmp_path / "data")}
    env["AISOAR_VAULT_URL"] = "http://127.0.0.1:9"
    done = subprocess.run(
        [sys.executable, "-m", "aisoar.cli", "connectors", "-v"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    vault = next(line for line in lines if " vault " in line)
    assert vault.startswith("--") and "AISOAR_VAULT_TOKEN" in vault
    assert any("gateway.block_key" in line for line in lines)


def test_docs_describe_every_action_and_connector() -> None:
    text = CONNECTORS_DOC.read_text()
    undocumented = sorted(name for name in REGISTRY if f"`{name}`" not in text and not name.startswith("evidence."))
    assert not undocumented, f"docs/connectors.md does not describe: {undocumented}"
    for entry in CONNECTORS:
        section = next((s for s in text.split("\n## ")[1:] if entry.system.split(" ")[0] in s.splitlines()[0]), None)
        assert section is not None, f"docs/connectors.md has no section for {entry.system}"
        missing = [name for name in entry.settings if name not in section]
        assert not missing, f"the {entry.system} section does not name {missing}"
