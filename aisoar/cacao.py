"""Playbook specs as OASIS CACAO 2.0 playbooks, and back.

Export: the spec's steps become a CACAO workflow a CACAO tool can read as it stands. Each step
is an ``action`` whose command is of type ``aisoar-action`` (what the step does, its MITRE-style
playbook activity); an approval gate is a ``manual`` action before it, addressed to a group
named after the approver roles, with the gate's timeout; a decision is a ``switch-condition``
or ``if-condition`` whose cases each lead down their own path (the steps after the decision that
run on that branch, those shared by every branch included), so each path reads as what runs.
ATLAS techniques and case studies and OWASP ids are external references. What aisoar needs to
run the steps exactly (the action, its inputs, conditions, the gate, the triggers and
objectives) travels in the extension ``extension-definition--{EXTENSION}``.

A parallel step is a ``parallel`` node whose ``next_steps`` are the steps it runs, each on a
branch of its own that ends at an end of its own (as CACAO asks), then on to what follows.

Import: the reverse, for a playbook that carries that extension. What aisoar cannot execute
safely is refused with the reason: commands of another type (bash, ssh, powershell, http-api,
...), a parallel branch of more than one step, loops, nested playbooks, a step without aisoar's
extension, a workflow whose order disagrees with its steps' positions, and anything `aisoar
validate` refuses (no evidence before a change, a destructive step without approval ...).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from aisoar.actions import ActionCatalog, Effect
from aisoar.specs import DEFAULT_CASE, PlaybookSpec, SpecError, Step, parse_spec, validate_spec

NAMESPACE = uuid.UUID("5d2b8e1c-3f0a-5b7e-9c41-a1505a0a1c40")  # aisoar's ids in CACAO documents
EXTENSION = str(uuid.uuid5(NAMESPACE, "extension/aisoar-playbook/1"))
EXTENSION_ID = f"extension-definition--{EXTENSION}"
COMMAND_TYPE = "aisoar-action"
CREATED_BY = f"identity--{uuid.uuid5(NAMESPACE, 'identity/aisoar')}"
ORCHESTRATOR = f"security-category--{uuid.uuid5(NAMESPACE, 'agent/aisoar')}"  # runs every aisoar-action
ACTIVITY = {
    Effect.read_only: "analyze-collected-data",
    Effect.notifies: "deliver-content",
    Effect.changing: "restrict-access",
    Effect.destructive: "eliminate-risk",
}
NOT_RUN = {
    "while-condition": "a loop (while-condition): aisoar playbooks do not loop",
    "playbook-action": "a nested playbook (playbook-action): aisoar does not run one playbook from another",
}


class CacaoRefused(ValueError):
    """A CACAO playbook aisoar will not import; ``reasons`` says each thing it cannot run."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("; ".join(reasons))


def _id(kind: str, *parts: str) -> str:
    return f"{kind}--{uuid.uuid5(NAMESPACE, '/'.join(parts))}"


def _spec_fields(spec: PlaybookSpec) -> dict[str, Any]:
    dumped: dict[str, Any] = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    dumped.pop("steps", None)
    return dumped


def _step_fields(step: Step, position: int) -> dict[str, Any]:
    dumped: dict[str, Any] = step.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return {"position": position, **dumped}


def export_spec(spec: PlaybookSpec, catalog: ActionCatalog, when: datetime | None = None) -> dict[str, Any]:
    """The spec as a CACAO 2.0 playbook (a JSON document)."""
    stamp = (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    steps = list(spec.steps)
    workflow: dict[str, Any] = {}
    end = _id("end", spec.name, "end")
    workflow[end] = {"type": "end", "name": "End"}
    agents: dict[str, Any] = {}

    def runs(step: Step, taken: dict[str, str | None]) -> bool:
        membership = spec.branch_of(step.id)
        if membership is None:
            return True
        decision, cases = membership
        return decision in taken and taken[decision] in cases

    def build(index: int, taken: dict[str, str | None]) -> str:
        while index < len(steps) and not runs(steps[index], taken):
            index += 1
        if index == len(steps):
            return end
        step = steps[index]
        path = ",".join(f"{d}={c}" for d, c in sorted(taken.items(), key=lambda item: item[0]))
        extension = {EXTENSION_ID: _step_fields(step, index)}
        name = step.title or step.id
        if step.switch is not None:
            cases = {case: build(index + 1, {**taken, step.id: case}) for case in step.branches}
            if DEFAULT_CASE not in cases:  # no case named: only the steps on no branch of it run
                cases[DEFAULT_CASE] = build(index + 1, {**taken, step.id: None})
            node_id = _id("switch-condition", spec.name, path, step.id)
            workflow[node_id] = {
                "type": "switch-condition",
                "name": name,
                "switch": step.switch,
                "cases": cases,
                "on_completion": end,
                "step_extensions": extension,
            }
            return node_id
        if step.if_ is not None:
            node_id = _id("if-condition", spec.name, path, step.id)
            workflow[node_id] = {
                "type": "if-condition",
                "name": name,
                "condition": step.if_,
                "on_true": build(index + 1, {**taken, step.id: "then"}),
                "on_false": build(index + 1, {**taken, step.id: "else"}),
                "on_completion": end,
                "step_extensions": extension,
            }
            return node_id
        if step.parallel:  # each step it runs is a branch of its own, ending at an end of its own
            branches = []
            for member in sorted((spec.step(i) for i in step.parallel), key=steps.index):
                member_end = _id("end", spec.name, path, member.id, "end")
                workflow[member_end] = {"type": "end", "name": f"End of {member.title or member.id}"}
                branches.append(place(member, steps.index(member), path, member_end))
            node_id = _id("parallel", spec.name, path, step.id)
            workflow[node_id] = {
                "type": "parallel",
                "name": name,
                "next_steps": branches,
                "on_completion": build(index + 1 + len(step.parallel), taken),
                "step_extensions": extension,
            }
            return node_id
        return place(step, index, path, build(index + 1, taken))

    def place(step: Step, index: int, path: str, then: str) -> str:
        """An action node for ``step`` (after its approval's manual step, if it has a gate)."""
        extension = {EXTENSION_ID: _step_fields(step, index)}
        name = step.title or step.id
        info = catalog[step.action]
        agents[ORCHESTRATOR] = {"type": "security-category", "name": "aisoar", "category": ["orchestrator"]}
        node_id = _id("action", spec.name, path, step.id)
        workflow[node_id] = {
            "type": "action",
            "name": name,
            "description": info.summary,
            "agent": ORCHESTRATOR,
            "commands": [
                {"type": COMMAND_TYPE, "description": step.action, "playbook_activity": ACTIVITY[info.effect]}
            ],
            "on_completion": then,
            "step_extensions": extension,
        }
        approval = step.approval
        if approval is None:
            return node_id
        group = _id("group", "approvers", *approval.approvers)
        agents[group] = {"type": "group", "name": f"aisoar approvers: {', '.join(approval.approvers)}"}
        quorum = f"{approval.quorum} of " if approval.quorum > 1 else "one of "
        gate_id = _id("action", spec.name, path, step.id, "approval")
        workflow[gate_id] = {
            "type": "action",
            "name": f"Approve: {name}",
            "agent": group,
            "commands": [
                {
                    "type": "manual",
                    "command": f"Approve {step.action} ({quorum}{', '.join(approval.approvers)}); "
                    f"unanswered after {approval.timeout_seconds} s: {approval.on_timeout}",
                }
            ],
            "timeout": approval.timeout_seconds * 1000,  # CACAO: milliseconds
            "on_completion": node_id,
            "step_extensions": {EXTENSION_ID: {"approval_for": step.id}},
        }
        return gate_id

    first = build(0, {})
    start = _id("start", spec.name, "start")
    workflow[start] = {"type": "start", "name": "Start", "on_completion": first}
    references = [
        {"name": f"MITRE ATLAS {t}", "external_id": t, "url": f"https://atlas.mitre.org/techniques/{t}"}
        for t in spec.atlas
    ]
    references += [
        {"name": f"MITRE ATLAS case study {c}", "external_id": c, "url": f"https://atlas.mitre.org/studies/{c}"}
        for c in spec.case_studies
    ]
    references += [{"name": f"OWASP Top 10 for LLM Applications {o}", "external_id": o} for o in spec.owasp]
    changes = any(catalog[s.action].changes_things for s in spec.steps if not s.branches)
    document: dict[str, Any] = {
        "type": "playbook",
        "spec_version": "cacao-2.0",
        "id": _id("playbook", "playbook", spec.name),
        "name": spec.title,
        "description": spec.description.strip() or spec.title,
        "playbook_types": ["mitigation" if changes else "investigation"],
        "created_by": CREATED_BY,
        "created": stamp,
        "modified": stamp,
        "labels": ["aisoar", *([spec.incident_type.value] if spec.incident_type else [])],
        "workflow_start": start,
        "workflow": workflow,
        "agent_definitions": agents,
        "playbook_extensions": {EXTENSION_ID: _spec_fields(spec)},
        "extension_definitions": {
            EXTENSION_ID: {
                "type": "extension-definition",
                "name": "aisoar playbook",
                "description": "What aisoar needs to run the playbook exactly: each step's action, inputs, "
                "condition and approval gate, and the playbook's triggers and objectives (docs/playbooks.md).",
                "created_by": CREATED_BY,
                "schema": "https://github.com/aisoar/aisoar/blob/main/docs/playbooks.md",
                "version": "1.0.0",
            }
        },
    }
    if references:
        document["external_references"] = references
    return document


def import_playbook(document: Any, catalog: ActionCatalog, file: str = "cacao.json") -> PlaybookSpec:
    """The aisoar spec a CACAO playbook carries; ``CacaoRefused`` says what it cannot run."""
    if not isinstance(document, dict) or document.get("type") != "playbook":
        raise CacaoRefused(["not a CACAO playbook (its `type` must be 'playbook')"])
    if document.get("spec_version") != "cacao-2.0":
        raise CacaoRefused([f"spec_version {str(document.get('spec_version'))[:40]!r}: only cacao-2.0 is read"])
    workflow = document.get("workflow")
    if not isinstance(workflow, dict) or document.get("workflow_start") not in workflow:
        raise CacaoRefused(["its workflow_start does not name a step of its workflow"])
    head = (document.get("playbook_extensions") or {}).get(EXTENSION_ID)
    reasons: list[str] = []
    if not isinstance(head, dict):
        reasons.append(
            "it carries no aisoar playbook extension: aisoar needs the triggers that start it, its incident "
            "type and its objectives, which CACAO does not express"
        )
    found: dict[str, dict[str, Any]] = {}
    for path in _paths(workflow, str(document["workflow_start"]), reasons):
        positions = []
        for node_id in path:
            node = workflow[node_id]
            fields = (node.get("step_extensions") or {}).get(EXTENSION_ID)
            if node.get("type") in ("start", "end"):
                continue
            name = str(node.get("name") or node_id)[:80]
            if node.get("type") in NOT_RUN:
                reasons.append(f"step {name!r}: {NOT_RUN[str(node['type'])]}")
                continue
            other = [str(c.get("type")) for c in node.get("commands") or [] if c.get("type") not in (COMMAND_TYPE,)]
            if isinstance(fields, dict) and "approval_for" in fields and other == ["manual"]:
                continue  # the approval of the step it leads to (the gate travels with that step)
            if other:
                reasons.append(f"step {name!r}: aisoar does not run {', '.join(sorted(set(other)))} commands")
                continue
            if not isinstance(fields, dict) or "id" not in fields:
                reasons.append(f"step {name!r}: no aisoar step extension, so no aisoar action to run")
                continue
            step = {k: v for k, v in fields.items() if k != "position"}
            if found.setdefault(str(fields["id"]), {**step, "position": fields.get("position")}) != {
                **step,
                "position": fields.get("position"),
            }:
                reasons.append(f"step {fields['id']!r} appears twice with different contents")
            positions.append(fields.get("position"))
        if positions != sorted(positions, key=lambda p: (not isinstance(p, int), p)):
            reasons.append("the workflow runs steps in an order their positions disagree with")
    if reasons:
        raise CacaoRefused(list(dict.fromkeys(reasons)))
    assert isinstance(head, dict)
    ordered = sorted(found.values(), key=lambda s: int(s["position"]))
    data = {**head, "steps": [{k: v for k, v in s.items() if k != "position"} for s in ordered]}
    import yaml

    try:
        spec = parse_spec(yaml.safe_dump(data, sort_keys=False), file)
    except SpecError as exc:
        raise CacaoRefused([str(p) for p in exc.problems]) from None
    problems = validate_spec(spec, catalog, file)
    if problems:
        raise CacaoRefused([str(p) for p in problems])
    return spec


def _paths(workflow: dict[str, Any], start: str, reasons: list[str]) -> Iterator[list[str]]:
    """Every path from ``start`` to an end (each node once per path; a cycle is refused)."""
    stack: list[tuple[str, list[str]]] = [(start, [])]
    while stack:
        node_id, path = stack.pop()
        if node_id not in workflow:
            reasons.append(f"a step leads to {node_id[:80]!r}, which is not in the workflow")
            continue
        if node_id in path:
            reasons.append("its workflow loops back to an earlier step")
            continue
        path = [*path, node_id]
        node = workflow[node_id]
        if node.get("type") == "parallel":
            path += _branches_of(workflow, node, reasons)
        following = [node.get(k) for k in ("on_true", "on_false") if node.get(k)]
        following += list((node.get("cases") or {}).values())
        if not following:
            following = [node[k] for k in ("on_completion", "on_success") if node.get(k)]
        if node.get("type") == "end" or not following:
            yield path
            continue
        stack.extend((str(n), path) for n in reversed(following))


def _branches_of(workflow: dict[str, Any], node: dict[str, Any], reasons: list[str]) -> list[str]:
    """The steps a parallel step runs, in the order of their positions: aisoar runs one step on
    each of its branches (the step, then the branch's end)."""
    name = str(node.get("name") or "parallel")[:80]
    members: list[str] = []
    for first in node.get("next_steps") or []:
        step = workflow.get(str(first))
        if not isinstance(step, dict):
            reasons.append(f"parallel step {name!r} leads to {str(first)[:80]!r}, which is not in the workflow")
            continue
        after = workflow.get(str(step.get("on_completion") or ""), {"type": "end"})
        if not isinstance(after, dict) or after.get("type") != "end" or step.get("type") != "action":
            reasons.append(f"parallel step {name!r}: a branch runs more than one action; aisoar runs one step a branch")
            continue
        members.append(str(first))

    def position(node_id: str) -> int:
        fields = (workflow[node_id].get("step_extensions") or {}).get(EXTENSION_ID) or {}
        at = fields.get("position") if isinstance(fields, dict) else None
        return at if isinstance(at, int) else -1

    return sorted(members, key=position)
