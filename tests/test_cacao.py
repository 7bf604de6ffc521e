"""Playbook specs as OASIS CACAO 2.0 playbooks: every shipped spec exported validates against
the OASIS CACAO 2.0 JSON schemas (tests/fixtures/cacao, from oasis-open/cacao-json-schemas,
Apache-2.0) and imports back to the same spec; what aisoar cannot run safely is refused with
the reason; the command line writes and reads the files."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator, Draft202012Validator
from referencing import Registry, Resource

from aisoar.cacao import EXTENSION_ID, CacaoRefused, export_spec, import_playbook
from aisoar.config import PROJECT_ROOT
from aisoar.specs import PlaybookSpec, load_specs
from tasks import catalog

SCHEMAS = Path(__file__).parent / "fixtures" / "cacao" / "schemas"
SPECS = {item.spec.name: item.spec for item in load_specs(PROJECT_ROOT / "playbook_specs", catalog())}


def validators() -> list[Draft7Validator | Draft202012Validator]:
    """The playbook schema as it declares itself (draft-07), and read strictly (2020-12: its
    `unevaluatedProperties` enforced); every $ref resolved from the files, never the network."""
    documents = [json.loads(path.read_text()) for path in SCHEMAS.rglob("*.json")]
    registry: Registry[Any] = Registry().with_resources(
        (document["$id"], Resource.from_contents(document)) for document in documents
    )
    top = json.loads((SCHEMAS / "playbook.json").read_text())
    return [Draft7Validator(top, registry=registry), Draft202012Validator(top, registry=registry)]


def errors(document: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for v in validators() for e in v.iter_errors(document)]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_spec_exports_as_valid_cacao_and_imports_back_the_same(name: str) -> None:
    document = export_spec(SPECS[name], catalog())
    assert errors(document) == []
    assert document["workflow"][document["workflow_start"]]["type"] == "start"
    back = import_playbook(json.loads(json.dumps(document)), catalog())
    assert back == SPECS[name]


def test_the_schemas_catch_a_broken_playbook() -> None:
    """The validation is not a formality: the schemas refuse what CACAO forbids."""
    document = export_spec(SPECS["leaked-llm-api-key"], catalog())
    broken = copy.deepcopy(document)
    del broken["workflow_start"]
    node = next(n for n in broken["workflow"].values() if n["type"] == "action")
    del node["agent"]
    broken["spec_version"] = "cacao-1.0"
    found = errors(broken)
    assert any("'workflow_start' is a required property" in e for e in found), found
    assert any("'agent' is a required property" in e for e in found), found
    assert any("'cacao-2.0' was expected" in e or "is not one of ['cacao-2.0']" in e for e in found), found


def test_a_branching_playbook_reads_as_one_path_per_case() -> None:
    document = export_spec(SPECS["multi-channel-prompt-injection"], catalog())
    workflow = document["workflow"]
    (switch,) = [n for n in workflow.values() if n["type"] == "switch-condition"]
    assert switch["switch"] == "alert.labels.injection_vector"
    assert set(switch["cases"]) == {"user_input", "retrieved_context", "agent_configuration", "default"}

    def path(node_id: str) -> list[str]:
        names = []
        while workflow[node_id]["type"] != "end":
            node = workflow[node_id]
            fields = node.get("step_extensions", {}).get(EXTENSION_ID, {})
            names.append(fields.get("id") or f"approve {fields.get('approval_for')}")
            node_id = node["on_completion"]
        return names

    common = ["notify-oncall", "open-ticket", "close"]
    assert path(switch["cases"]["user_input"]) == ["quarantine-session", *common]
    assert path(switch["cases"]["agent_configuration"]) == ["take-agent-offline", *common]
    assert path(switch["cases"]["retrieved_context"]) == [
        "export-collection",
        "notify-oncall",
        "open-ticket",
        "approve quarantine-collection",  # the gate: a manual step for the approvers' group
        "quarantine-collection",
        "close",
    ]
    assert path(switch["cases"]["default"]) == common  # a vector no case names: none of the branches
    gate = next(n for n in workflow.values() if n.get("commands", [{}])[0].get("type") == "manual")
    assert (
        gate["timeout"] == 3600 * 1000 and "incident-commander, ml-platform-on-call" in gate["commands"][0]["command"]
    )


def test_a_parallel_step_is_a_parallel_node_whose_branches_each_end() -> None:
    document = export_spec(SPECS["data-leakage"], catalog())
    workflow = document["workflow"]
    fork = next(n for n in workflow.values() if n["type"] == "parallel" and "channel" in n["name"])
    ran = [workflow[b]["step_extensions"][EXTENSION_ID]["id"] for b in fork["next_steps"]]
    assert ran == ["block-user", "tighten-guardrails", "throttle-key", "filter-output-at-gateway"]
    ends = [workflow[workflow[b]["on_completion"]] for b in fork["next_steps"]]
    assert all(end["type"] == "end" for end in ends)
    assert len({workflow[b]["on_completion"] for b in fork["next_steps"]}) == 4  # each branch its own end
    after = workflow[fork["on_completion"]]
    assert after["step_extensions"][EXTENSION_ID]["id"] == "notify-oncall"
    assert import_playbook(document, catalog()) == SPECS["data-leakage"]


def refusal(document: dict[str, Any]) -> list[str]:
    with pytest.raises(CacaoRefused) as refused:
        import_playbook(document, catalog())
    return refused.value.reasons


def first_action(document: dict[str, Any]) -> dict[str, Any]:
    start = document["workflow"][document["workflow_start"]]
    node: dict[str, Any] = document["workflow"][start["on_completion"]]
    return node


def test_import_refuses_what_aisoar_cannot_run_and_says_why() -> None:
    document = export_spec(SPECS["leaked-llm-api-key"], catalog())
    shell = copy.deepcopy(document)
    first_action(shell)["commands"] = [{"type": "bash", "command": "rm -rf /"}]
    assert refusal(shell) == ["step 'Preserve the alert payloads': aisoar does not run bash commands"]

    parallel = copy.deepcopy(document)
    start = parallel["workflow"][parallel["workflow_start"]]
    fork = "parallel--7f0c8f7e-1f43-4f6e-9a3a-2b7d4f0e9c11"
    parallel["workflow"][fork] = {"type": "parallel", "name": "both", "next_steps": [start["on_completion"]]}
    parallel["workflow"][fork]["on_completion"] = start["on_completion"]
    start["on_completion"] = fork
    assert "parallel step 'both': a branch runs more than one action; aisoar runs one step a branch" in refusal(
        parallel
    )

    foreign = copy.deepcopy(document)
    del foreign["playbook_extensions"]
    del first_action(foreign)["step_extensions"]
    reasons = refusal(foreign)
    assert reasons[0].startswith("it carries no aisoar playbook extension")
    assert "step 'Preserve the alert payloads': no aisoar step extension, so no aisoar action to run" in reasons

    reordered = copy.deepcopy(document)
    first_action(reordered)["step_extensions"][EXTENSION_ID]["position"] = 99
    assert "the workflow runs steps in an order their positions disagree with" in refusal(reordered)


def test_import_refuses_a_playbook_aisoar_validate_refuses() -> None:
    """Edited to delete the key at OpenAI without approval: the runner's rules refuse it."""
    document = export_spec(SPECS["leaked-llm-api-key"], catalog())
    for node in document["workflow"].values():
        fields = node.get("step_extensions", {}).get(EXTENSION_ID, {})
        if fields.get("id") == "delete-key-at-provider":
            del fields["gate"]
    assert refusal(document) == [
        "cacao.json: step 'delete-key-at-provider': action 'openai.delete_project_key' is destructive and has no "
        "approval gate (fix: add `gate: {approval: {approvers: [...], timeout: 4h}}`)"
    ]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=cwd, capture_output=True, text=True)


def test_the_command_line_exports_and_imports_files(tmp_path: Path) -> None:
    exported = run("cacao", "export", "--out", str(tmp_path / "cacao"), cwd=PROJECT_ROOT)
    assert exported.returncode == 0, exported.stderr
    files = sorted(p.name for p in (tmp_path / "cacao").glob("*.cacao.json"))
    assert files == sorted(f"{name}.cacao.json" for name in SPECS)
    source = tmp_path / "cacao" / "jailbreak-campaign.cacao.json"
    imported = run("cacao", "import", str(source), "--out", str(tmp_path / "specs"), cwd=PROJECT_ROOT)
    assert imported.returncode == 0, imported.stderr
    again = run("cacao", "import", str(source), "--out", str(tmp_path / "specs"), cwd=PROJECT_ROOT)
    assert again.returncode == 2 and "exists; --force replaces it" in again.stderr
    checked = run("validate", str(tmp_path / "specs"), cwd=PROJECT_ROOT)
    assert checked.returncode == 0 and "ok  jailbreak-campaign.yaml" in checked.stdout, checked.stdout + checked.stderr
    loaded = load_specs(tmp_path / "specs", catalog())
    assert [item.spec for item in loaded] == [SPECS["jailbreak-campaign"]]
    document = json.loads(source.read_text())
    first_action(document)["commands"] = [{"type": "ssh", "command": "reboot"}]
    (tmp_path / "bad.json").write_text(json.dumps(document))
    refused = run("cacao", "import", str(tmp_path / "bad.json"), cwd=PROJECT_ROOT)
    assert refused.returncode == 2
    assert (
        "not imported, aisoar cannot run it safely" in refused.stderr and "does not run ssh commands" in refused.stderr
    )


def test_an_imported_spec_is_a_playbook_spec() -> None:
    spec = import_playbook(export_spec(SPECS["triage"], catalog()), catalog())
    assert isinstance(spec, PlaybookSpec) and spec.fallback and spec.name == "triage"
