"""`aisoar connectors [--check]`: every connector listed, configured or not, reachable or not."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.systems import BY_NAME, SYSTEMS
from sandbox.serving import free_port
from sandbox.stack import Sandbox
from tasks import REGISTRY
from tasks.inventory import statuses
from tests.conftest import make_settings
from tests.docs import CONNECTORS_DOC

STAND_INS = ("litellm", "openai", "slack", "jira", "pagerduty", "anthropic", "qdrant", "agent")


def test_every_action_namespace_is_a_declared_system() -> None:
    namespaces = {name.split(".")[0] for name in REGISTRY}
    declared = {system.name for system in SYSTEMS}
    local = {"evidence", "incident", "http"}  # no external system, or one entry per configured endpoint
    assert namespaces - local == declared, f"namespaces without a system: {namespaces - local - declared}"


def test_unconfigured_connectors_name_their_settings(tmp_path: Path) -> None:
    listed = {s.name: s for s in statuses(make_settings(tmp_path / "data"))}
    assert set(listed) == {system.name for system in SYSTEMS}
    assert not listed["vault"].configured
    assert "AISOAR_VAULT_URL" in listed["vault"].detail and "AISOAR_VAULT_TOKEN" in listed["vault"].detail
    assert "vault.revoke_token_accessor" in listed["vault"].actions


def test_a_setting_under_its_old_name_still_configures_its_system(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Settings renamed to the system's one name (AISOAR_OPENAI_ADMIN_URL -> AISOAR_OPENAI_URL)
    are still read, with one warning that names the new name."""
    env = {"AISOAR_OPENAI_ADMIN_URL": "http://127.0.0.1:9/v1", "AISOAR_OPENAI_ADMIN_KEY": "k"}
    old = make_settings(tmp_path / "data", env=env)
    openai = BY_NAME["openai"]
    with caplog.at_level(logging.WARNING, logger="aisoar.connectors"):
        assert openai.settings_of(old).url == "http://127.0.0.1:9/v1"
        assert openai.configured(old)
    warned = [r.getMessage() for r in caplog.records if "AISOAR_OPENAI_URL" in r.getMessage()]
    assert len(warned) <= 1 and all("AISOAR_OPENAI_ADMIN_URL is the old name" in w for w in warned)


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
        [sys.executable, "-m", "cli.main", "connectors", "-v"],
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
    assert any("litellm.block_key" in line for line in lines)


def test_docs_describe_every_action_and_connector() -> None:
    text = CONNECTORS_DOC.read_text()
    undocumented = sorted(name for name in REGISTRY if f"`{name}`" not in text and not name.startswith("evidence."))
    assert not undocumented, f"docs/connectors.md does not describe: {undocumented}"
    for system in SYSTEMS:  # a section per system, headed by its name, naming every setting
        section = next((s for s in text.split("\n## ")[1:] if f"`{system.name}.*`" in s.splitlines()[0]), None)
        assert section is not None, f"docs/connectors.md has no section headed `{system.name}.*`"
        missing = [system.env(name) for name in system.settings.model_fields if system.env(name) not in section]
        assert not missing, f"the {system.title} section does not name {missing}"
