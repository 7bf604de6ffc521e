"""Static validation of playbook specs: every error names the file, the step and a fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aisoar.config import PROJECT_ROOT
from aisoar.specs import SpecError, load_specs, parse_spec, route, validate_spec
from aisoar.taxonomy import IncidentType
from tasks import catalog

HEAD = """
name: test-playbook
title: Test
incident_type: api_abuse
atlas: [AML.T0029]
owasp: ["LLM10:2025"]
triggers:
  - incident_types: [api_abuse]
"""
NO_OBJECTIVE = "declares no containment objective"


def problems(steps: str, head: str = HEAD, objectives: bool = False) -> list[str]:
    """The problems of a spec made of HEAD and ``steps``; the missing-objective problem only
    with ``objectives`` (the tests about objectives below), so other tests stay focused."""
    spec = parse_spec(head + "steps:\n" + steps, "test.yaml")
    found = [str(p) for p in validate_spec(spec, catalog(), "test.yaml")]
    return found if objectives else [p for p in found if NO_OBJECTIVE not in p]


def test_shipped_specs_are_valid() -> None:
    loaded = load_specs(PROJECT_ROOT / "playbook_specs", catalog())
    names = {item.spec.name for item in loaded}
    assert len(names) == len(loaded) == len(list((PROJECT_ROOT / "playbook_specs").glob("*.yaml")))
    assert "leaked-llm-api-key" in names


def test_a_valid_spec_has_no_problems() -> None:
    assert (
        problems("""
  - id: keep
    action: evidence.capture_alerts
  - id: block
    action: litellm.block_key
    with: {key_hash: "{{ entities.llm_api_key.gateway_key_hash }}"}
  - id: delete
    action: openai.delete_project_key
    with: {project_id: p, key_id: "{{ steps.block.summary }}"}
    gate: {approval: {approvers: [ic], timeout: 1h}}
""")
        == []
    )


def test_unknown_action_is_named_with_a_hint() -> None:
    found = problems("""
  - id: keep
    action: evidence.capture_alerts
  - id: block
    action: litellm.block
""")
    assert found == ["test.yaml: step 'block': unknown action 'litellm.block' (fix: did you mean litellm.block_key?)"]


def test_duplicate_step_id() -> None:
    found = problems("""
  - id: keep
    action: evidence.capture_alerts
  - id: keep
    action: evidence.capture_alerts
""")
    assert found == ["test.yaml: step 'keep': duplicate step id (fix: give every step a unique id)"]


def test_reference_to_a_later_step_and_to_an_unknown_name() -> None:
    found = problems("""
  - id: keep
    action: evidence.capture_alerts
  - id: tell
    action: slack.notify_oncall
    with: {message: "{{ steps.close.summary }} {{ secrets.token }}"}
  - id: close
    action: incident.close
""")
    assert any("step 'tell'" in p and "reads step 'close' which does not run before it" in p for p in found)
    assert any("step 'tell'" in p and "unknown name 'secrets'" in p for p in found)


def test_unreachable_steps() -> None:
    found = problems("""
  - id: keep
    action: evidence.capture_alerts
  - id: never
    action: slack.notify_oncall
    when: "false"
  - id: close
    action: incident.close
  - id: after
    action: slack.notify_oncall
""")
    assert any("step 'never'" in p and "always false" in p for p in found)
    assert any("step 'after'" in p and "unreachable: step 'close' ends the playbook" in p for p in found)


def test_destructive_step_without_approval() -> None:
    found = problems("""
  - id: keep
    action: evidence.capture_alerts
  - id: delete
    action: openai.delete_project_key
    with: {project_id: p, key_id: k}
""")
    assert found == [
        "test.yaml: step 'delete': action 'openai.delete_project_key' is destructive and has no approval gate "
        "(fix: add `gate: {approval: {approvers: [...], timeout: 4h}}`)"
    ]


def test_destructive_step_may_not_default_to_approve() -> None:
    found = problems("""
  - id: keep
    action: evidence.capture_alerts
  - id: delete
    action: openai.delete_project_key
    with: {project_id: p, key_id: k}
    gate: {approval: {approvers: [ic], timeout: 10m, on_timeout: approve}}
""")
    assert any("may not default to approve" in p for p in found)


def test_changing_step_without_evidence_before_it() -> None:
    found = problems("""
  - id: block
    action: litellm.block_key
    with: {key_hash: "{{ entities.llm_api_key.gateway_key_hash }}"}
  - id: keep
    action: evidence.capture_alerts
""")
    assert found == [
        "test.yaml: step 'block': changing step 'litellm.block_key' has no evidence step before it "
        "(fix: add an evidence-collecting step (e.g. litellm.collect_key_evidence) before it)"
    ]


def test_inputs_are_checked_against_the_action() -> None:
    found = problems("""
  - id: keep
    action: evidence.capture_alerts
  - id: block
    action: litellm.block_key
    with: {key: abc}
""")
    assert any("input 'key' is not accepted" in p for p in found)
    assert any("required input 'key_hash' of 'litellm.block_key' is missing" in p for p in found)


def test_taxonomy_ids_must_be_real_and_edition_pinned() -> None:
    head = HEAD.replace("[AML.T0029]", "[AT1070, AML.T0029]").replace('["LLM10:2025"]', '["LLM10"]')
    found = problems("  - id: keep\n    action: evidence.capture_alerts\n", head)
    assert any("'AT1070' is not a MITRE ATLAS technique id" in p for p in found)
    assert any("'LLM10' is not an edition-pinned OWASP LLM id" in p for p in found)


def test_schema_errors_name_the_step() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(
            HEAD + "steps:\n  - id: keep\n    action: evidence.capture_alerts\n    gate: {approval: {}}\n", "bad.yaml"
        )
    text = str(caught.value)
    assert "bad.yaml: step 'keep'" in text and "approvers" in text


def test_yaml_syntax_error() -> None:
    with pytest.raises(SpecError, match="not valid YAML"):
        parse_spec("name: [unclosed", "broken.yaml")


def test_load_specs_reports_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(HEAD + "steps:\n  - id: x\n    action: nope.nothing\n")
    (tmp_path / "b.yaml").write_text("name: [")
    with pytest.raises(SpecError) as caught:
        load_specs(tmp_path, catalog())
    files = {p.file for p in caught.value.problems}
    assert files == {"a.yaml", "b.yaml"}


@pytest.mark.parametrize(
    ("example", "playbooks"),
    [
        ("leaked-openai-key", {"leaked-llm-api-key"}),
        ("leaked-anthropic-key", {"leaked-anthropic-key"}),
        ("leaked-cloud-access-key", {"leaked-cloud-access-key"}),
        ("compromised-vault-token", {"agent-credential-compromise"}),
        ("agent-tool-misuse", {"agent-tool-misuse"}),
        ("jailbreak-campaign", {"jailbreak-campaign"}),
        ("rag-poisoning-chroma", {"rag-poisoning"}),
        ("rag-poisoning-qdrant", {"rag-poisoning-qdrant"}),
        ("tampered-model", {"tampered-model"}),
        ("data-leakage", {"data-leakage"}),
        ("model-extraction", {"model-extraction"}),
        ("malicious-code-generation", {"llm-app-misuse"}),
        ("bias-report", {"bias-report"}),
        ("prompt-injection-agent-config", {"multi-channel-prompt-injection"}),
    ],
)
def test_each_example_alert_starts_its_playbooks(example: str, playbooks: set[str]) -> None:
    from aisoar.ingress.adapters import generic_json

    alert = generic_json("generic", (PROJECT_ROOT / "examples" / "alerts" / f"{example}.json").read_bytes())
    specs = [item.spec for item in load_specs(PROJECT_ROOT / "playbook_specs", catalog())]
    assert {spec.name for spec in specs if spec.matches(alert)} == playbooks


STEPS = """
  - id: keep
    action: evidence.capture_alerts
  - id: block
    action: litellm.block_key
    with: {key_hash: "{{ entities.llm_api_key.gateway_key_hash }}"}
  - id: tell
    action: slack.notify_oncall
  - id: delete
    action: openai.delete_project_key
    with: {project_id: p, key_id: k}
    gate: {approval: {approvers: [ic], timeout: 1h}}
"""


def test_a_playbook_that_changes_things_declares_what_it_must_achieve() -> None:
    assert problems(STEPS, objectives=True) == [
        "test.yaml: the playbook changes things (block, delete) but declares no containment objective "
        "(fix: add `objectives: [{id: ..., title: ..., any_of: [<changing step ids>]}]`)"
    ]
    met = HEAD + "objectives:\n  - {id: refused, title: the key is refused, any_of: [block, delete]}\n"
    assert problems(STEPS, head=met, objectives=True) == []


def test_an_objective_names_changing_steps_that_exist() -> None:
    head = HEAD + "objectives:\n  - {id: refused, title: the key is refused, any_of: [tell, nope, block]}\n"
    assert problems(STEPS, head=head, objectives=True) == [
        "test.yaml: objective 'refused' names step 'tell' (slack.notify_oncall), which changes nothing at the "
        "target and so cannot be verified there (fix: name the changing steps whose verified outcome meets the "
        "objective)",
        "test.yaml: objective 'refused' names step 'nope', which does not exist (fix: fix the id)",
    ]


def test_an_approval_gate_may_not_come_before_the_announcement() -> None:
    steps = STEPS.replace("action: slack.notify_oncall", "action: incident.announce")
    assert problems(steps) == []
    late = steps + "  - id: announce-late\n    action: incident.announce\n"
    found = problems(late.replace("  - id: tell\n    action: incident.announce\n", ""))
    assert found == [
        "test.yaml: step 'delete': its approval gate comes before the announcement ('incident.announce'): nobody "
        "would know it waits (fix: move the 'incident.announce' step before it, or remove it (the runner then "
        "announces first))"
    ]


def test_a_fallback_playbook_takes_no_triggers_and_others_need_one() -> None:
    with pytest.raises(SpecError, match="at least one trigger"):
        parse_spec(HEAD.replace("triggers:\n  - incident_types: [api_abuse]\n", "") + "steps:\n" + STEPS, "t.yaml")
    fallback = "name: triage-test\ntitle: T\nfallback: true\n"
    assert parse_spec(fallback + "steps:\n" + STEPS, "t.yaml").fallback is True
    with pytest.raises(SpecError, match="takes no triggers"):
        parse_spec(fallback + "triggers: [{labels: {a: b}}]\nsteps:\n" + STEPS, "t.yaml")


def test_two_keys_in_one_alert_each_go_to_their_playbook_and_providers_match_in_any_case() -> None:
    from aisoar.ingress.adapters import generic_json

    body = {
        "id": "two-keys-1",
        "title": "two keys leaked in one commit",
        "severity": "high",
        "incident_type": "api_abuse",
        "entities": [
            {"type": "llm_api_key", "provider": "Anthropic", "key_id": "apikey_01A"},
            {"type": "llm_api_key", "provider": " OpenAI ", "key_id": "key_B", "project_id": "proj_B"},
        ],
    }
    alert = generic_json("generic", json.dumps(body).encode())
    assert [e.provider for e in alert.entities if e.type == "llm_api_key"] == ["anthropic", "openai"]
    specs = {item.spec.name: item.spec for item in load_specs(PROJECT_ROOT / "playbook_specs", catalog())}
    assert {name for name, spec in specs.items() if spec.matches(alert)} == {
        "leaked-anthropic-key",
        "leaked-llm-api-key",
    }
    # Each playbook's templates read its own key, not the first key of the alert.
    assert specs["leaked-anthropic-key"].pick_entities(alert.entities)["llm_api_key"].key_id == "apikey_01A"
    assert specs["leaked-llm-api-key"].pick_entities(alert.entities)["llm_api_key"].key_id == "key_B"
    only_anthropic = generic_json("generic", json.dumps({**body, "entities": body["entities"][:1]}).encode())
    assert {name for name, spec in specs.items() if spec.matches(only_anthropic)} == {"leaked-anthropic-key"}


# What a detector of each type typically names, and the playbook that answers it then.
KEY = {"type": "llm_api_key", "provider": "litellm", "key_sha256": "ab" * 32}
USER, AGENT = {"type": "user", "user_id": "u-1", "ip": "45.155.205.1"}, {"type": "agent", "name": "bot"}
MODEL, INDEX = {"type": "model", "name": "m", "version": "3"}, {"type": "vector_index", "name": "kb", "store": "chroma"}
TYPICAL: dict[str, tuple[list[dict[str, Any]], str]] = {
    "data_poisoning": ([INDEX], "rag-poisoning"),
    "data_leakage": ([USER, AGENT, KEY], "data-leakage"),
    "data_integrity_violation": ([MODEL], "tampered-model"),
    "model_theft": ([KEY, USER], "model-extraction"),
    "model_inversion": ([USER, AGENT], "model-extraction"),
    "model_backdoor": ([MODEL], "tampered-model"),
    "model_evasion": ([USER, AGENT], "model-evasion"),
    "direct_prompt_injection": ([USER, AGENT], "jailbreak-campaign"),
    "indirect_prompt_injection": ([INDEX], "rag-poisoning"),
    "jailbreak": ([USER, AGENT, KEY], "jailbreak-campaign"),
    "abuse_generation": ([USER, AGENT], "llm-app-misuse"),
    "rogue_agent": ([AGENT, {"type": "tool", "name": "web.fetch", "agent": "bot"}], "agent-tool-misuse"),
    "unauthorized_access": (
        [{"type": "cloud_credential", "provider": "aws", "credential_id": "AKIAIOSFODNN7EXAMPLE"}],
        "leaked-cloud-access-key",
    ),
    "api_abuse": (
        [{"type": "llm_api_key", "provider": "openai", "key_id": "k", "project_id": "p"}],
        "leaked-llm-api-key",
    ),
    "dependency_exploitation": ([MODEL], "tampered-model"),
    "malicious_code_generation": ([USER, AGENT], "llm-app-misuse"),
    "phishing_generation": ([USER], "llm-app-misuse"),
    "output_manipulation": ([AGENT], "llm-app-misuse"),
    "hallucination_exploitation": ([AGENT], "llm-app-misuse"),
    "bias": ([], "bias-report"),
}
# Naming nothing but its type, an alert still gets its type's general answer.
BARE = {
    "data_poisoning": "llm-app-misuse",
    "data_integrity_violation": "model-evasion",
    "model_backdoor": "model-evasion",
    "dependency_exploitation": "model-evasion",
    "direct_prompt_injection": "llm-app-misuse",
    "indirect_prompt_injection": "llm-app-misuse",
    "jailbreak": "llm-app-misuse",
    "rogue_agent": "llm-app-misuse",
    "unauthorized_access": "llm-app-misuse",
    "api_abuse": "model-extraction",
}


@pytest.mark.parametrize("kind", [t.value for t in IncidentType])
def test_every_incident_type_is_answered_by_a_playbook_whatever_the_alert_names(kind: str) -> None:
    """The taxonomy enumerated: an alert of each type starts a playbook that answers it (never
    triage), with the entities a detector of that type sends and with none at all; a playbook
    chosen by type alone says so on the incident's timeline."""
    from aisoar.ingress.adapters import generic_json

    specs = [item.spec for item in load_specs(PROJECT_ROOT / "playbook_specs", catalog())]
    entities, playbook = TYPICAL[kind]
    body = {"id": f"{kind}-1", "title": f"a {kind} alert", "severity": "high", "incident_type": kind}
    typical = route(specs, generic_json("generic", json.dumps({**body, "entities": entities}).encode()))
    assert (typical.how, typical.names) == ("matched", [playbook])
    bare_alert = generic_json("generic", json.dumps(body).encode())
    bare = route(specs, bare_alert)
    assert bare.names == [BARE.get(kind, playbook)] and bare.how == ("otherwise" if kind in BARE else "matched")
    note = bare.note(bare_alert)
    if kind in BARE:
        assert note is not None and note.startswith(
            f"chosen by incident type alone: the alert ({kind}, naming no entity)"
        )
    else:
        assert note is None
    answering = next(spec for spec in specs if spec.name == bare.names[0])
    assert any(kind in trigger.incident_types for trigger in answering.triggers)


def test_an_alert_of_no_type_that_nothing_matches_goes_to_triage_and_says_so() -> None:
    from aisoar.ingress.adapters import generic_json

    specs = [item.spec for item in load_specs(PROJECT_ROOT / "playbook_specs", catalog())]
    alert = generic_json("generic", json.dumps({"id": "odd-1", "title": "something odd", "severity": "low"}).encode())
    routed = route(specs, alert)
    assert (routed.how, routed.names) == ("fallback", ["triage"])
    assert routed.note(alert) == "no playbook answers this alert: the triage playbook tells on-call"
    assert route([], alert).note(alert) == "no playbook matches this alert; triage by hand"


BRANCHING = """
  - id: keep
    action: evidence.capture_alerts
  - id: vector
    switch: "alert.labels.vector"
    cases:
      user: [block-user]
      agent: [keep-agent, offline]
  - id: keep-agent
    action: agent.collect_evidence
    with: {agent: bot}
  - id: block-user
    action: agent.block_user
    with: {user: u-1}
  - id: offline
    action: agent.take_offline
    with: {agent: bot, instance: i-1}
"""
OBJECTIVE = HEAD + "objectives:\n  - {id: cut, title: cut off, any_of: [block-user, offline]}\n"


def test_a_decision_names_later_steps_each_on_one_decision() -> None:
    assert problems(BRANCHING, head=OBJECTIVE, objectives=True) == []
    spec = parse_spec(OBJECTIVE + "steps:\n" + BRANCHING, "t.yaml")
    assert spec.step("vector").action == "incident.branch"
    assert spec.branch_of("offline") == ("vector", {"agent"}) and spec.branch_of("keep") is None
    wrong = BRANCHING.replace("agent: [keep-agent, offline]", "agent: [keep, nope, offline]")
    assert problems(wrong, head=OBJECTIVE, objectives=True) == [
        "test.yaml: step 'vector': branch agent names step 'keep', which comes before the decision (fix: move the "
        "step after the decision (a decision runs later steps only))",
        "test.yaml: step 'vector': branch agent names step 'nope', which does not exist (fix: fix the id)",
    ]
    twice = BRANCHING + '  - id: again\n    if: "true"\n    then: [offline]\n'
    assert "step 'offline' is on branches of two decisions (vector and again)" in " ".join(
        problems(twice, head=OBJECTIVE, objectives=True)
    )
    closing = BRANCHING.replace("user: [block-user]", "user: [block-user, done]") + (
        "  - id: done\n    action: incident.close\n"
    )
    assert any("names step 'done' (incident.close), which every path must run" in p for p in problems(closing))


def test_evidence_kept_on_another_branch_does_not_count() -> None:
    """keep-agent runs only on branch agent: block-user (branch user) has the alerts' evidence
    (main path); without it, it would have none on its branch."""
    bare = BRANCHING.replace("  - id: keep\n    action: evidence.capture_alerts\n", "")
    assert problems(bare, head=OBJECTIVE, objectives=True) == [
        "test.yaml: step 'block-user': changing step 'agent.block_user' has no evidence step before it on its "
        "branch (fix: add an evidence-collecting step (e.g. litellm.collect_key_evidence) before it, before the "
        "decision or on the same branch)"
    ]


def test_a_decision_is_a_switch_with_cases_or_an_if_with_branches() -> None:
    def error(step: str) -> str:
        with pytest.raises(SpecError) as caught:
            parse_spec(HEAD + "steps:\n" + step, "t.yaml")
        return str(caught.value)

    assert "a `switch` needs `cases`" in error("  - id: d\n    switch: alert.title\n")
    assert "takes no `action`" in error("  - id: d\n    action: slack.notify_oncall\n    if: 'true'\n    then: [x]\n")
    assert "write `switch:` or `if:` instead" in error("  - id: d\n    action: incident.branch\n")
    assert "either `switch`" in error("  - id: d\n    switch: a\n    if: b\n    cases: {x: [y]}\n")
    assert "an `if` needs `then` or `else`" in error("  - id: d\n    if: 'true'\n")
    assert "is taken by `default:`" in error("  - id: d\n    switch: a\n    cases: {default: [y]}\n")


def test_a_playbook_supersedes_another_for_the_alerts_it_answers(tmp_path: Path) -> None:
    from aisoar.ingress.adapters import generic_json

    specs = [item.spec for item in load_specs(PROJECT_ROOT / "playbook_specs", catalog())]
    body = {"id": "pi-1", "title": "injection", "severity": "high", "incident_type": "direct_prompt_injection"}
    body["entities"] = [{"type": "user", "user_id": "u-1"}]
    assert route(specs, generic_json("generic", json.dumps(body).encode())).names == ["jailbreak-campaign"]
    body["labels"] = {"injection_vector": "user_input"}
    assert route(specs, generic_json("generic", json.dumps(body).encode())).names == ["multi-channel-prompt-injection"]
    (tmp_path / "a.yaml").write_text(HEAD + "supersedes: [nothing-here]\nsteps:\n" + STEPS.split("  - id: block")[0])
    with pytest.raises(SpecError, match="supersedes 'nothing-here': no such other playbook"):
        load_specs(tmp_path, catalog())


def test_a_decision_takes_its_case_its_default_or_no_branch_and_says_which() -> None:
    from typing import cast

    from flows.steps import branch_not_taken, decision_inputs
    from tasks.base import ActionContext
    from tasks.incident import BranchInputs, decide

    spec = parse_spec(OBJECTIVE + "steps:\n" + BRANCHING, "t.yaml")
    nobody = cast(ActionContext, None)  # a decision reads nothing but its inputs

    def decided(labels: dict[str, str]) -> dict[str, object]:
        context: dict[str, Any] = {"alert": {"labels": labels}, "steps": {}}
        outcome = decide(nobody, BranchInputs.model_validate(decision_inputs(spec.step("vector"), context)))
        context["steps"]["vector"] = {**outcome.output, "status": outcome.status.value, "summary": outcome.summary}
        return {
            s: (o.summary if (o := branch_not_taken(spec, spec.step(s), context)) else "runs")
            for s in ("offline", "block-user", "keep")
        } | {"vector": outcome.summary}

    assert decided({"vector": "agent"}) == {
        "vector": "took branch agent",
        "offline": "runs",
        "block-user": "not taken: decision vector took branch agent; this step is on branch user",
        "keep": "runs",
    }
    assert decided({"vector": "<!channel> {{ 7*7 }}"})["vector"] == (
        "took no branch: '<!channel> {{ 7*7 }}' names none of user, agent, and there is no default"
    )
    assert decided({})["offline"] == "not taken: decision vector took no branch; this step is on branch agent"
    with_default = BRANCHING.replace(
        "      agent: [keep-agent, offline]\n", "      agent: [keep-agent, offline]\n    default: [keep-agent]\n"
    )
    spec = parse_spec(OBJECTIVE + "steps:\n" + with_default, "t.yaml")
    assert decided({"vector": "email"})["vector"] == "took branch default ('email' names no case)"
    assert decided({"vector": "email"})["offline"].startswith("not taken: decision vector took branch default")


PARALLEL = """
  - id: keep
    action: evidence.capture_alerts
  - id: at-once
    parallel: [offline, block-user]
  - id: block-user
    action: agent.block_user
    with: {user: u-1}
  - id: offline
    action: agent.take_offline
    with: {agent: bot, instance: i-1}
"""


def test_a_parallel_step_runs_the_steps_right_after_it() -> None:
    assert problems(PARALLEL, head=OBJECTIVE, objectives=True) == []
    spec = parse_spec(OBJECTIVE + "steps:\n" + PARALLEL, "t.yaml")
    assert spec.step("at-once").action == "incident.parallel"
    assert spec.parallel_of("offline") == "at-once" and spec.parallel_of("keep") is None
    late = PARALLEL.replace(
        "  - id: block-user\n",
        "  - id: later\n    action: slack.post_update\n    with: {message: x}\n  - id: block-user\n",
    )
    assert problems(late) == [
        "test.yaml: step 'at-once': the steps it runs (offline, block-user) are not the steps right after it "
        "(fix: list them right after 'at-once' (in any order))"
    ]
    assert problems(PARALLEL.replace("[offline, block-user]", "[offline, nope]")) == [
        "test.yaml: step 'at-once': parallel names step 'nope', which does not exist (fix: fix the id)"
    ]


def test_a_parallel_step_runs_only_steps_that_can_run_beside_others() -> None:
    gated = PARALLEL.replace(
        "    with: {agent: bot, instance: i-1}\n",
        "    with: {agent: bot, instance: i-1}\n    gate: {approval: {approvers: [incident-commander], timeout: 1h}}\n",
    )
    assert any("step 'offline' waits for an approval: a run pauses as a whole for one" in p for p in problems(gated))
    closing = PARALLEL.replace("[offline, block-user]", "[offline, block-user, done]") + (
        "  - id: done\n    action: incident.close\n"
    )
    assert any("step 'done' (incident.close) runs once, in order" in p for p in problems(closing))
    branched = PARALLEL.replace(
        "  - id: at-once\n", '  - id: d\n    if: "true"\n    then: [offline]\n  - id: at-once\n'
    )
    assert any("step 'offline' is named by a decision's branch too" in p for p in problems(branched))


def test_evidence_kept_at_the_same_time_as_a_change_is_not_before_it() -> None:
    together = (
        PARALLEL.replace("  - id: keep\n    action: evidence.capture_alerts\n", "")
        .replace("[offline, block-user]", "[keep-agent, offline, block-user]")
        .replace(
            "  - id: block-user\n",
            "  - id: keep-agent\n    action: agent.collect_evidence\n    with: {agent: bot}\n  - id: block-user\n",
        )
    )
    assert sorted(problems(together)) == [
        "test.yaml: step 'block-user': changing step 'agent.block_user' has no evidence step before it (fix: add "
        "an evidence-collecting step (e.g. litellm.collect_key_evidence) before it, before the parallel step "
        "'at-once')",
        "test.yaml: step 'offline': changing step 'agent.take_offline' has no evidence step before it (fix: add "
        "an evidence-collecting step (e.g. litellm.collect_key_evidence) before it, before the parallel step "
        "'at-once')",
    ]
    reads_sibling = PARALLEL.replace("{user: u-1}", "{user: \"{{ steps['offline'].summary }}\"}")
    assert any("reads step 'offline' which does not run before it" in p for p in problems(reads_sibling))


def test_a_parallel_step_names_two_steps_and_nothing_else() -> None:
    def error(step: str) -> str:
        with pytest.raises(SpecError) as caught:
            parse_spec(HEAD + "steps:\n" + step, "t.yaml")
        return str(caught.value)

    assert "two or more different steps" in error("  - id: p\n    parallel: [a]\n")
    assert "two or more different steps" in error("  - id: p\n    parallel: [a, a]\n")
    assert "takes no `with`, `gate` or `when`" in error("  - id: p\n    parallel: [a, b]\n    when: 'true'\n")
    assert "write `parallel: [ids]` instead" in error("  - id: p\n    action: incident.parallel\n")
    assert "not both" in error("  - id: p\n    parallel: [a, b]\n    if: 'true'\n    then: [a]\n")
