"""Every example alert, fired at the stack `make up` starts (`aisoar up` in its own process:
Prefect server on SQLite, stand-ins, real OpenBao, moto, MLflow and Chroma), every approval
answered yes as a responder answers it in the Prefect UI (the decision and the one-time code
the Slack stand-in's DM gave them): each run ends in the state docs/playbooks.md documents,
each incident is closed, each approval names the person who gave it, and each target really
changed (read back from the target, not from aisoar)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aisoar.config import PROJECT_ROOT, Settings
from aisoar.store import Store
from cli.prefect_auth import basic_auth, credential
from connectors.agent import SYSTEM as AGENT
from connectors.anthropic import SYSTEM as ANTHROPIC
from connectors.aws import SYSTEM as AWS
from connectors.chroma import SYSTEM as CHROMA
from connectors.litellm import SYSTEM as LITELLM
from connectors.mlflow import SYSTEM as MLFLOW
from connectors.openai import SYSTEM as OPENAI
from connectors.qdrant import SYSTEM as QDRANT
from connectors.vault import SYSTEM as VAULT
from sandbox.agent import DEMO_POISONED_MEMORY_ID
from sandbox.real_servers import SAMPLE_AWS_KEY_ID, SAMPLE_AWS_USER, SAMPLE_VAULT_ACCESSOR
from sandbox.serving import free_port
from sandbox.stack import DEMO_ANTHROPIC_KEY_ID, DEMO_KEY_ID, DEMO_PROJECT, DEMO_SECRET
from tests.conftest import make_settings

pytestmark = pytest.mark.e2e
EXAMPLES = sorted((PROJECT_ROOT / "examples" / "alerts").glob("*.json"))
# The DM that carries an approver's code (flows/answers.py send_codes).
CODE_DM = re.compile(
    r"code for step `(?P<step>[^`]+)` \(.*?\) of incident (?P<incident>INC-\S+): "
    r"\*(?P<code>[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4})\*"
)
PAUSE_KEY = re.compile(r"approval-(?P<step>.+)-\d+")  # flows/approvals.py: one per form put up
ROW = re.compile(r"^\| `(?P<file>[a-z0-9-]+\.json)` \| (?P<playbook>[^|]+) \| (?P<waits>[^|]+) \| (?P<ends>[^|]+) \|")


def documented() -> dict[str, tuple[str, str, str]]:
    """docs/playbooks.md's table: example file -> (playbook, the state its run ends in when
    approved, the incident's status then: closed, or open when the table says it stays open)."""
    rows = {}
    for line in (PROJECT_ROOT / "docs" / "playbooks.md").read_text().splitlines():
        if match := ROW.match(line):
            playbook = match["playbook"].strip().strip("`")
            ends = re.sub(r"\W+$", "", match["ends"].strip().strip("*").split(" (")[0].strip("*"))
            status = "closed" if "(incident closed)" in match["ends"] else "open"
            rows[match["file"]] = (playbook, ends, status)
    return rows


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    data: Path
    prefect: str

    def aisoar(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", *args], env=self.env, cwd=self.data.parent, capture_output=True
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        return done.stdout.decode()

    def settings(self) -> Settings:
        return make_settings(self.data, env=self.sandbox_env())

    def sandbox_env(self) -> dict[str, str]:
        return dict(
            line.split("=", 1)
            for line in (self.data / "sandbox.env").read_text().splitlines()
            if line and not line.startswith("#")
        )

    def codes(self) -> dict[tuple[str, str], list[str]]:
        """(incident, step) -> the one-time codes the Slack stand-in's DMs carry, one per person
        who may approve (sandbox/approvers.yaml), as each reads theirs in Slack."""
        slack = self.sandbox_env()["AISOAR_SLACK_BASE_URL"].removesuffix("/").removesuffix("/api")
        found: dict[tuple[str, str], list[str]] = {}
        for dm in httpx.get(f"{slack}/_sandbox/dms", timeout=10).json():
            if match := CODE_DM.search(str(dm.get("text", ""))):
                found.setdefault((match["incident"], match["step"]), []).append(match["code"])
        return found

    def prefect_headers(self) -> dict[str, str]:
        """The credential `aisoar up` locked its Prefect server with (in the data dir)."""
        return basic_auth(credential(self.data).auth_string)

    def runs(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = httpx.post(
            f"{self.prefect}/api/flow_runs/filter", json={}, headers=self.prefect_headers(), timeout=10
        ).json()
        return found


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    root = tmp_path_factory.mktemp("make-up")
    data, port, ingress = root / "data", free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "AISOAR_"))}
    env |= {"AISOAR_DATA_DIR": str(data), "AISOAR_INGRESS_PORT": str(ingress), "PREFECT_HOME": str(root / "home")}
    log = open(root / "up.log", "wb")  # closed at the end of the module
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--prefect-port", str(port)],
        env=env,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started = Up(process, env, data, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 240
        while "aisoar is up" not in (root / "up.log").read_text(errors="replace"):
            assert process.poll() is None, (root / "up.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "aisoar up did not come up in 240 s"
            time.sleep(0.5)
        yield started
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def simulated_paths(out: str) -> list[dict[str, list[str]]]:
    """`aisoar simulate`'s output: for each alert, each playbook's path."""
    found = []
    for block in out.split("# Simulation of alert ")[1:]:
        paths = re.findall(r"^## Playbook ([a-z0-9-]+):(?:.|\n)*?^path: ([^\n]*)$", block, re.M)
        found.append({playbook: path.split(" -> ") for playbook, path in paths})
    return found


def test_every_example_alert_ends_as_documented_and_changes_its_target(up: Up) -> None:
    table = documented()
    assert set(table) == {path.name for path in EXAMPLES}, "docs/playbooks.md must document every example alert"
    # A tabletop exercise first: every example simulated against the same systems takes the
    # path examples/paths.yaml gives, is fully covered, and changes nothing.
    expected = yaml.safe_load((PROJECT_ROOT / "examples" / "paths.yaml").read_text())
    assert set(expected) == {path.name for path in EXAMPLES}, "examples/paths.yaml must give every example's path"
    out = up.aisoar("simulate", *map(str, EXAMPLES))
    assert dict(zip([p.name for p in EXAMPLES], simulated_paths(out), strict=True)) == expected
    assert out.count("not covered: nothing") == len(EXAMPLES) - 2, out  # all but the two that contain nothing
    assert out.count("it contains nothing (it declares no objectives)") == 2, out  # bias-report, unclassified
    settings = up.settings()
    assert not (LITELLM.client(settings).key_info(hashlib.sha256(DEMO_SECRET.encode()).hexdigest()) or {})["blocked"]
    slack = up.sandbox_env()["AISOAR_SLACK_BASE_URL"].removesuffix("/").removesuffix("/api")
    assert httpx.get(f"{slack}/_sandbox/messages", timeout=10).json() == []  # nobody was told
    incidents = {}
    for path in EXAMPLES:
        out = up.aisoar("fire", str(path))
        incidents[path.name] = re.search(r"^incident (INC-\S+)$", out, re.M).group(1)  # type: ignore[union-attr]

    answered: set[tuple[str, str]] = set()
    used: set[str] = set()  # codes work once
    deadline = time.monotonic() + 240
    while True:
        runs = up.runs()
        waiting = [r for r in runs if r["state"]["type"] in {"SCHEDULED", "PENDING", "RUNNING", "PAUSED"}]
        if len(runs) >= len(EXAMPLES) and not waiting:
            break
        assert time.monotonic() < deadline, [(r["name"], r["state"]["name"]) for r in waiting]
        codes = up.codes()
        for run in waiting:
            details = run["state"]["state_details"]
            key = (run["id"], json.dumps(details.get("run_input_keyset")))
            form = PAUSE_KEY.fullmatch(details.get("pause_key") or "")
            if run["state"]["name"] != "Awaiting approval" or form is None or key in answered:
                continue
            incident = run["name"].split(" · ")[1]
            unused = [code for code in codes.get((incident, form["step"]), []) if code not in used]
            if not unused:
                continue  # the DMs are on their way
            answer = {"decision": "approve", "code": unused[0], "reason": "confirmed"}
            resumed = httpx.post(
                f"{up.prefect}/api/flow_runs/{run['id']}/resume",
                json={"run_input": answer},
                headers=up.prefect_headers(),
            )
            if resumed.status_code in (200, 201) and resumed.json().get("status") == "ACCEPT":
                answered.add(key)
                used.add(unused[0])
        time.sleep(0.5)

    ended = {(r["name"].split(" · ")[0], r["name"].split(" · ")[1]): r["state"] for r in up.runs()}
    store = Store(f"sqlite:///{up.data / 'aisoar.db'}")
    for file, (playbook, name, status) in table.items():
        state = ended[(playbook, incidents[file])]
        assert state["name"] == name, f"{file}: {playbook} ended {state['name']}: {state['message']}"
        assert store.get_incident(incidents[file]).status.value == status, file
        # Each approval was given by a verified person, through the form, with their own code.
        for record in store.approvals_for(incidents[file]):
            assert (record.status, record.decided_by in record.allowed) == ("approved", True), (file, record)
            assert [(a.channel, a.person, a.counted) for a in record.answers] == [
                ("prefect-ui", record.decided_by, True)
            ], (file, record.answers)
    assert used, "no approval was answered: the examples' gates were not reached"
    check_targets(up)


def check_targets(up: Up) -> None:
    settings = up.settings()
    aliases = json.loads((up.data / "sandbox-aliases.json").read_text())
    # leaked-openai-key: refused at the gateway, gone at OpenAI.
    key_hash = hashlib.sha256(DEMO_SECRET.encode()).hexdigest()
    assert (LITELLM.client(settings).key_info(key_hash) or {}).get("blocked") is True
    assert OPENAI.client(settings).get_project_key(DEMO_PROJECT, DEMO_KEY_ID) is None
    # leaked-anthropic-key: inactive at Anthropic.
    assert (ANTHROPIC.client(settings).get_key(DEMO_ANTHROPIC_KEY_ID) or {}).get("status") == "inactive"
    # compromised-vault-token: OpenBao no longer knows the token's accessor.
    assert VAULT.client(settings).lookup_accessor(aliases[SAMPLE_VAULT_ACCESSOR]) is None
    # leaked-cloud-access-key: deleted in moto's IAM.
    assert AWS.client(settings).access_key(SAMPLE_AWS_USER, aliases[SAMPLE_AWS_KEY_ID]) is None
    # tampered-model: production serves the known-good version.
    assert MLFLOW.client(settings).get_alias("fraud-scorer", "production") == "2"
    # rag-poisoning-chroma: support-kb serves again without the two poisoned records.
    chroma = CHROMA.client(settings)
    collection = chroma.get_collection("support-kb")
    assert collection is not None and chroma.count(collection) == 118
    assert chroma.present_ids(collection, ["doc-007", "doc-101", "doc-008"]) == ["doc-008"]
    # rag-poisoning-qdrant: the alias serves the known-good collection.
    assert QDRANT.client(settings).aliases()["kb"] == "kb-v1"
    # agent-tool-misuse: the tool is disabled and the poisoned memory purged.
    agents = AGENT.client(settings)
    assert {t["tool"]: t["enabled"] for t in agents.tools("support-bot")}["web.fetch"] is False
    memory, _ = agents.memory("support-bot")
    assert DEMO_POISONED_MEMORY_ID not in {item["id"] for item in memory}
    # jailbreak-campaign: the user and the source address are blocked.
    assert agents.block("user", "u-4711") is not None and agents.block("ip", "45.155.205.233") is not None
    # agent-tool-misuse, jailbreak-campaign, data-leakage: the key's permissions at the gateway.
    gateway_key = LITELLM.client(settings).key_info(key_hash) or {}
    assert "web.fetch" in (gateway_key.get("object_permission") or {}).get("blocked_tools", [])
    assert {"prompt-injection-strict", "output-pii-filter"} <= set(gateway_key["metadata"]["guardrails"])
    # data-leakage: the user and the source address are blocked (the gateway key is blocked above).
    assert agents.block("user", "u-5120") is not None and agents.block("ip", "45.155.205.240") is not None
    # model-extraction: the querying user is rate-limited.
    assert (agents.rate_limit("user", "u-7731") or {}).get("requests_per_minute") == 2
    # malicious-code-generation: the account is blocked.
    assert agents.block("user", "u-9904") is not None
    # model-evasion: the source of the crafted inputs is rate-limited.
    assert (agents.rate_limit("user", "u-3310") or {}).get("requests_per_minute") == 5


def test_a_simulation_published_to_prefect_shows_alert_text_inert(up: Up, tmp_path: Path) -> None:
    """`aisoar simulate --publish`: the plan as a markdown artifact on the Prefect server the
    responders use, the alert's text escaped (no HTML, no link, no template), nothing done."""
    hostile = {
        "id": "sim-hostile-1",
        "title": "<img src=x onerror=alert(1)> [open me](http://evil.example/x) {{ 7*7 }}",
        "severity": "high",
        "incident_type": "data_leakage",
        "entities": [{"type": "user", "user_id": "u-7777"}],
    }
    file = tmp_path / "hostile.json"
    file.write_text(json.dumps(hostile))
    out = up.aisoar("simulate", "--publish", str(file))
    key = re.search(r"^published as Prefect artifact (\S+)$", out, re.M)
    assert key is not None, out
    found = httpx.post(
        f"{up.prefect}/api/artifacts/filter",
        json={"artifacts": {"key": {"any_": [key[1]]}}},
        headers=up.prefect_headers(),
        timeout=10,
    ).json()
    assert len(found) == 1 and found[0]["type"] == "markdown", found
    data = found[0]["data"]
    assert "block-user [would do]" in data and "Playbook data-leakage" in data
    assert "<img" not in data, data
    assert "&lt;img" in data and "](http" not in data and "evil\\[\\.\\]example" in data, data
    # Never rendered as a template: the braces kept as the alert sent them, and no 49 anywhere
    # but in the generated ids (random hex, which may hold "49").
    assert "\\{\\{ 7\\*7 \\}\\}" in data, data
    assert "49" not in re.sub(r"(ALR|INC)\\?-\d{8}\\?-[0-9a-f]+", "", data), data
    assert AGENT.client(up.settings()).block("user", "u-7777") is None  # nothing changed
