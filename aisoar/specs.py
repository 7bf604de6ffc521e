"""Playbook specs: the schema, the loader and the static validator.

A spec is YAML: which alerts it answers, the incident type with its ATLAS / OWASP ids,
and its steps. ``validate_spec`` checks a spec against the action catalog without running
anything and returns problems that name the file, the step and the fix.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aisoar.actions import ActionCatalog, Effect
from aisoar.models import Alert, Severity
from aisoar.taxonomy import IncidentType, is_atlas_id, is_owasp_llm_id
from aisoar.templating import TemplateProblem, referenced_roots, referenced_steps

TEMPLATE_ROOTS = frozenset({"alert", "incident", "entities", "steps", "run", "spec"})
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
StepId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]


def parse_duration(value: Any) -> int:
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and (match := _DURATION.match(value.strip())):
        return int(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(f"duration {value!r}: use seconds or a number with s/m/h/d, e.g. '4h'")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trigger(_Strict):
    """An alert matches when every criterion given here matches (empty = any)."""

    sources: list[str] = Field(default_factory=list)
    incident_types: list[IncidentType] = Field(default_factory=list)
    entity_types: list[str] = Field(default_factory=list, description="all must be present")
    labels: dict[str, str] = Field(default_factory=dict)
    label_keys: list[str] = Field(default_factory=list, description="labels the alert must carry, whatever their value")
    entities: dict[str, dict[str, list[str]]] = Field(
        default_factory=dict,
        description="entity type -> field -> accepted values; some entity of that type must match every field, "
        "e.g. {llm_api_key: {provider: [anthropic]}}",
    )
    min_severity: Severity = Severity.info
    otherwise: bool = Field(
        False,
        description="matches only an alert that no playbook's other triggers match: the answer for an "
        "incident type when the alert lacks what the type's specific playbooks need (e.g. a model "
        "backdoor alert that names no model)",
    )

    entities_except: dict[str, dict[str, list[str]]] = Field(
        default_factory=dict,
        description="entity type -> field -> values; some entity of that type must NOT have all these values, "
        "e.g. {llm_api_key: {provider: [anthropic]}}: a key of any provider but Anthropic",
    )

    def entity_fits(self, entity: Any) -> bool:
        """Whether ``entity`` fits this trigger's criteria for its type (case-insensitive)."""
        wanted, excluded = self.entities.get(entity.type), self.entities_except.get(entity.type)
        if wanted is None and excluded is None:
            return entity.type in self.entity_types
        values = entity.model_dump(mode="json")

        def has(fields: dict[str, list[str]]) -> bool:
            return all(
                str(values.get(name)).lower() in {a.lower() for a in accepted} for name, accepted in fields.items()
            )

        return (wanted is None or has(wanted)) and (excluded is None or not has(excluded))

    def _entity_matches(self, alert: Alert, kind: str) -> bool:
        return any(entity.type == kind and self.entity_fits(entity) for entity in alert.entities)

    def matches(self, alert: Alert) -> bool:
        if self.sources and alert.source not in self.sources:
            return False
        if self.incident_types and alert.incident_type not in self.incident_types:
            return False
        present = {e.type for e in alert.entities}
        if any(kind not in present for kind in self.entity_types):
            return False
        if any(alert.labels.get(k) != v for k, v in self.labels.items()):
            return False
        if any(not alert.labels.get(k) for k in self.label_keys):
            return False
        if any(not self._entity_matches(alert, kind) for kind in {*self.entities, *self.entities_except}):
            return False
        return alert.severity.rank >= self.min_severity.rank


class Escalation(_Strict):
    """One step of an unanswered approval's escalation, ``after`` the request opened: remind
    the allowed approvers again, or page a role in PagerDuty (its people may then approve too)."""

    after_seconds: int = Field(alias="after")
    remind: bool = False
    page: str | None = Field(None, description="a role of the approvers directory to page in PagerDuty")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("after_seconds", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        return parse_duration(value)

    @model_validator(mode="after")
    def _one_thing(self) -> Escalation:
        if self.remind == (self.page is not None):
            raise ValueError("an escalation step either reminds (remind: true) or pages a role (page: <role>)")
        return self


class Approval(_Strict):
    approvers: list[str] = Field(min_length=1, description="roles or people (of the approvers directory)")
    quorum: int = Field(1, ge=1, description="distinct verified people who must approve (2: the two-person rule)")
    timeout_seconds: int = Field(alias="timeout", default=4 * 3600)
    on_timeout: Literal["reject", "approve"] = "reject"
    escalation: list[Escalation] = Field(default_factory=list, description="what happens while nobody answers")
    allow_self_approval: bool = Field(
        False, description="whether the person who started the run by hand may approve its steps"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("timeout_seconds", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        return parse_duration(value)

    @model_validator(mode="after")
    def _quorum_fits(self) -> Approval:
        afters = [e.after_seconds for e in self.escalation]
        if afters != sorted(afters) or len(set(afters)) != len(afters):
            raise ValueError("escalation steps must come in order of `after`, each later than the one before")
        if afters and afters[-1] >= self.timeout_seconds:
            raise ValueError(f"escalation after {afters[-1]}s comes at or after the timeout ({self.timeout_seconds}s)")
        return self


class Gate(_Strict):
    approval: Approval


BRANCH_ACTION = "incident.branch"  # the action of a decision step (switch or if)
PARALLEL_ACTION = "incident.parallel"  # the action of a parallel step (its join)
DEFAULT_CASE = "default"


class Step(_Strict):
    """One step: an action, or a decision (CACAO's switch-condition and if-condition): a
    ``switch`` expression whose value names the case whose steps run, or an ``if`` expression
    whose truth runs the ``then`` or the ``else`` steps. The steps a decision names are steps
    of the playbook further down; those of the cases not taken are skipped as "not taken".
    Or a ``parallel`` step (CACAO's parallel): the steps right after it that it names run at the
    same time, and the playbook goes on when all of them have ended."""

    id: StepId
    action: str = ""
    title: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict, alias="with")
    when: str | None = Field(None, description="Jinja expression; the step is skipped when it is false")
    gate: Literal["auto"] | Gate = "auto"
    continue_on_failure: bool = False
    switch: str | None = Field(None, description="switch-condition: a Jinja expression; its value names the case")
    cases: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")], list[StepId]] = Field(  # as CACAO
        default_factory=dict, description="case value -> the ids of the steps that run when it is taken"
    )
    default: list[StepId] = Field(default_factory=list, description="the steps that run when no case is named")
    if_: str | None = Field(None, alias="if", description="if-condition: a Jinja expression")
    then: list[StepId] = Field(default_factory=list, description="the steps that run when `if` is true")
    else_: list[StepId] = Field(default_factory=list, alias="else", description="... and when it is false")
    parallel: list[StepId] = Field(
        default_factory=list, description="the ids of the steps right after this one that run at the same time"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _decision_action(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("switch" in data or "if" in data or "if_" in data) and not data.get("action"):
            return {**data, "action": BRANCH_ACTION}
        if isinstance(data, dict) and "parallel" in data and not data.get("action"):
            return {**data, "action": PARALLEL_ACTION}
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        if self.parallel or self.action == PARALLEL_ACTION:
            return self._parallel_step()
        decides = self.switch is not None or self.if_ is not None
        if self.switch is not None and self.if_ is not None:
            raise ValueError("a decision step has either `switch` (with `cases`) or `if` (with `then`/`else`)")
        if decides and self.action != BRANCH_ACTION:
            raise ValueError(f"a decision step (switch/if) takes no `action` (it is {BRANCH_ACTION})")
        if not decides and self.action == BRANCH_ACTION:
            raise ValueError(f"{BRANCH_ACTION} is the action of a decision: write `switch:` or `if:` instead")
        if not decides and not self.action:
            raise ValueError("a step needs an `action` (or is a decision: `switch:` or `if:`)")
        if not decides and (self.cases or self.default or self.then or self.else_):
            raise ValueError("`cases`, `default`, `then` and `else` belong to a decision step (switch/if)")
        if self.switch is not None and not self.cases:
            raise ValueError("a `switch` needs `cases` (value -> step ids)")
        if self.switch is not None and (self.then or self.else_):
            raise ValueError("a `switch` takes `cases` and `default`, not `then`/`else`")
        if self.if_ is not None and (self.cases or self.default):
            raise ValueError("an `if` takes `then` and `else`, not `cases`/`default`")
        if self.if_ is not None and not (self.then or self.else_):
            raise ValueError("an `if` needs `then` or `else` steps")
        if decides and (self.inputs or isinstance(self.gate, Gate)):
            raise ValueError("a decision step takes no `with` and no `gate`")
        if self.switch is not None and DEFAULT_CASE in self.cases:
            raise ValueError(f"case '{DEFAULT_CASE}' is taken by `default:`")
        return self

    def _parallel_step(self) -> Step:
        if self.switch is not None or self.if_ is not None or self.cases or self.default or self.then or self.else_:
            raise ValueError("a step is either a decision (switch/if) or a parallel step, not both")
        if self.action != PARALLEL_ACTION:
            raise ValueError(f"a parallel step takes no `action` (it is {PARALLEL_ACTION})")
        if not self.parallel:
            raise ValueError(f"{PARALLEL_ACTION} is the action of a parallel step: write `parallel: [ids]` instead")
        if len(self.parallel) < 2 or len(set(self.parallel)) != len(self.parallel):
            raise ValueError("`parallel` names two or more different steps (one step needs no parallel)")
        if self.inputs or isinstance(self.gate, Gate) or self.when is not None:
            raise ValueError(
                "a parallel step takes no `with`, `gate` or `when`: put a condition or a gate on the steps it "
                "runs, or the parallel step on a decision's branch"
            )
        return self

    @property
    def approval(self) -> Approval | None:
        return self.gate.approval if isinstance(self.gate, Gate) else None

    @property
    def branches(self) -> dict[str, list[str]]:
        """A decision's branches: case -> step ids (``default``, or ``then``/``else``); else empty."""
        if self.switch is not None:
            return {**self.cases, **({DEFAULT_CASE: self.default} if self.default else {})}
        if self.if_ is not None:
            return {name: ids for name, ids in (("then", self.then), ("else", self.else_)) if ids}
        return {}


class Objective(_Strict):
    """What the playbook must achieve, checked against the target: met when one of the
    steps ``any_of`` ended done and verified (a changing step's probe read the target)."""

    id: StepId
    title: str = Field(min_length=1, max_length=200, description='e.g. "the key is refused at the gateway"')
    phase: Literal["containment", "eradication", "recovery"] = "containment"
    any_of: list[StepId] = Field(min_length=1, description="changing steps; any one done and verified meets it")


ANNOUNCE_ACTION = "incident.announce"


class PlaybookSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{2,62}$")]
    title: str
    description: str = ""
    incident_type: IncidentType | None = Field(None, description="required, except for a fallback (triage) playbook")
    atlas: list[str] = Field(default_factory=list)
    owasp: list[str] = Field(default_factory=list)
    case_studies: list[str] = Field(default_factory=list)
    severity_floor: Severity = Severity.low
    fallback: bool = Field(False, description="runs for an alert that no other playbook answers (triage)")
    triggers: list[Trigger] = Field(default_factory=list)
    supersedes: list[str] = Field(
        default_factory=list,
        description="playbooks that do not run for an alert this one answers (it does their part, more precisely)",
    )
    objectives: list[Objective] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1)

    def matches(self, alert: Alert) -> bool:
        """A trigger other than an ``otherwise`` one matches."""
        return any(not trigger.otherwise and trigger.matches(alert) for trigger in self.triggers)

    def matches_otherwise(self, alert: Alert) -> bool:
        return any(trigger.otherwise and trigger.matches(alert) for trigger in self.triggers)

    @model_validator(mode="after")
    def _triggered(self) -> PlaybookSpec:
        if not self.fallback and not self.triggers:
            raise ValueError("triggers: a playbook needs at least one trigger (or `fallback: true` for triage)")
        if not self.fallback and self.incident_type is None:
            raise ValueError("incident_type: required (one of the 20 CoSAI types)")
        if self.fallback and self.triggers:
            raise ValueError("triggers: a fallback playbook runs for unmatched alerts and takes no triggers")
        return self

    def pick_entities(self, entities: list[Any]) -> dict[str, Any]:
        """One entity per type for the templates: the first that fits a trigger's criteria for
        its type (an alert about an OpenAI and an Anthropic key gives the Anthropic playbook the
        Anthropic key), else the first of its type."""
        picked: dict[str, Any] = {}
        for entity in entities:
            criteria = [t for t in self.triggers if entity.type in t.entities or entity.type in t.entities_except]
            if criteria and any(t.entity_fits(entity) for t in criteria):
                current = picked.get(entity.type)
                if current is None or not any(t.entity_fits(current) for t in criteria):
                    picked[entity.type] = entity
            picked.setdefault(entity.type, entity)
        return picked

    @property
    def announces(self) -> bool:
        """The spec places the announcement itself; otherwise the runner announces first."""
        return any(step.action == ANNOUNCE_ACTION for step in self.steps)

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def parallel_of(self, step_id: str) -> str | None:
        """The parallel step that runs ``step_id`` (with others, at the same time), if any."""
        for step in self.steps:
            if step_id in step.parallel:
                return step.id
        return None

    def branch_of(self, step_id: str) -> tuple[str, set[str]] | None:
        """The decision a step belongs to and the cases that run it; None for a step on the
        main path (it runs whatever was decided). A step run by a parallel step is on the
        parallel step's branch."""
        seen = {step_id}
        together = self.parallel_of(step_id)
        while together is not None and together not in seen:  # a cycle is for validate to refuse
            seen.add(together)
            step_id, together = together, self.parallel_of(together)
        for step in self.steps:
            cases = {case for case, ids in step.branches.items() if step_id in ids}
            if cases:
                return step.id, cases
        return None


@dataclass(frozen=True)
class Routing:
    """The playbooks an alert starts, and how they were chosen (for the incident's timeline)."""

    specs: list[PlaybookSpec]
    how: Literal["matched", "otherwise", "fallback", "none"]

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def note(self, alert: Alert) -> str | None:
        """What a responder should know about the choice, or None when the alert matched outright."""
        if self.how == "none":
            return "no playbook matches this alert; triage by hand"
        if self.how == "fallback":
            return "no playbook answers this alert: the triage playbook tells on-call"
        if self.how == "otherwise":
            kind = alert.incident_type.value if alert.incident_type else "untyped"
            named = ", ".join(sorted({e.type for e in alert.entities})) or "no entity"
            return (
                f"chosen by incident type alone: the alert ({kind}, naming {named}) fits no playbook's full "
                f"trigger, so {', '.join(self.names)} answers it; its steps that need an entity the alert "
                "lacks are skipped and say so"
            )
        return None


def route(specs: list[PlaybookSpec], alert: Alert) -> Routing:
    """The playbooks that answer the alert: those a trigger matches (less those another of them
    supersedes); else those an ``otherwise`` trigger matches (the incident type's general
    answer); else the fallback (triage) playbooks."""
    matched = [spec for spec in specs if not spec.fallback and spec.matches(alert)]
    superseded = {name for spec in matched for name in spec.supersedes}
    if matched:  # playbooks that supersede each other (a mistake) both run rather than neither
        return Routing([spec for spec in matched if spec.name not in superseded] or matched, "matched")
    general = [spec for spec in specs if not spec.fallback and spec.matches_otherwise(alert)]
    if general:
        return Routing(general, "otherwise")
    fallback = [spec for spec in specs if spec.fallback]
    return Routing(fallback, "fallback" if fallback else "none")


@dataclass(frozen=True)
class SpecProblem:
    file: str
    step: str | None
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.file}: step '{self.step}'" if self.step else self.file
        return f"{where}: {self.message} (fix: {self.fix})"


class SpecError(Exception):
    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def parse_spec(text: str, file: str) -> PlaybookSpec:
    """Parse one spec; schema errors become ``SpecError`` naming the field and step."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError([SpecProblem(file, None, f"not valid YAML: {exc}", "fix the YAML syntax")]) from exc
    if not isinstance(data, dict):
        raise SpecError([SpecProblem(file, None, "the top level must be a mapping", "start with `name:`")])
    try:
        return PlaybookSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = list(error["loc"])
            step = None
            if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
                raw_steps = data.get("steps") or []
                raw = raw_steps[loc[1]] if loc[1] < len(raw_steps) else None
                step = str(raw.get("id")) if isinstance(raw, dict) else f"#{loc[1] + 1}"
            field = ".".join(str(p) for p in loc)
            problems.append(SpecProblem(file, step, f"{field}: {error['msg']}", "see docs/playbooks.md for the schema"))
        raise SpecError(problems) from exc


def validate_spec(spec: PlaybookSpec, catalog: ActionCatalog, file: str) -> list[SpecProblem]:
    """Static checks a spec must pass before it may run."""
    problems: list[SpecProblem] = []

    def problem(step: str | None, message: str, fix: str) -> None:
        problems.append(SpecProblem(file, step, message, fix))

    for atlas_id in spec.atlas:
        if not is_atlas_id(atlas_id):
            problem(None, f"'{atlas_id}' is not a MITRE ATLAS technique id", "use AML.Txxxx[.yyy] ids")
    for owasp_id in spec.owasp:
        if not is_owasp_llm_id(owasp_id):
            problem(None, f"'{owasp_id}' is not an edition-pinned OWASP LLM id", "write it as LLM10:2025")

    _check_decisions(spec, catalog, problem)
    _check_parallel(spec, catalog, problem)
    seen: set[str] = set()
    # the branches each evidence step runs on, and the parallel step that runs it (if one does):
    # evidence kept at the same time as a change is not evidence before it
    evidence_paths: list[tuple[list[tuple[str, set[str]]], str | None]] = []
    announced = not spec.announces  # the runner announces before the first step then
    ended_by: str | None = None
    for step in spec.steps:
        if step.id in seen:
            problem(step.id, "duplicate step id", "give every step a unique id")
        if ended_by is not None:
            problem(step.id, f"unreachable: step '{ended_by}' ends the playbook before it", "move it earlier")
        if step.when is not None and step.when.strip().lower() in {"false", "0", "none", "no"}:
            problem(step.id, f"unreachable: its condition '{step.when}' is always false", "remove the step")

        info = catalog.get(step.action)
        if info is None:
            close = difflib.get_close_matches(step.action, list(catalog), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else "run `aisoar actions` for the list"
            problem(step.id, f"unknown action '{step.action}'", hint)
            seen.add(step.id)
            continue

        together = spec.parallel_of(step.id)
        siblings = set(spec.step(together).parallel) if together is not None else set()
        fields = {} if step.branches or step.parallel else info.inputs.model_fields
        _check_inputs(step, fields, seen - siblings, problem)  # a sibling runs at the same time
        path = branch_path(spec, step.id)
        evidence_before = any(
            _covers(earlier, path) for earlier, group in evidence_paths if group is None or group != together
        )

        if info.effect is Effect.destructive and step.approval is None:
            problem(
                step.id,
                f"action '{step.action}' is destructive and has no approval gate",
                "add `gate: {approval: {approvers: [...], timeout: 4h}}`",
            )
        if step.approval is not None and not announced:
            problem(
                step.id,
                f"its approval gate comes before the announcement ('{ANNOUNCE_ACTION}'): nobody would know it waits",
                f"move the '{ANNOUNCE_ACTION}' step before it, or remove it (the runner then announces first)",
            )
        if step.action == ANNOUNCE_ACTION:
            announced = True
        if info.effect is Effect.destructive and step.approval and step.approval.on_timeout == "approve":
            problem(step.id, "a destructive step may not default to approve on timeout", "use on_timeout: reject")
        if info.changes_things and not evidence_before:
            problem(
                step.id,
                f"changing step '{step.action}' has no evidence step before it" + (" on its branch" if path else ""),
                "add an evidence-collecting step (e.g. litellm.collect_key_evidence) before it"
                + (", before the decision or on the same branch" if path else "")
                + (f", before the parallel step '{together}'" if together else ""),
            )
        if info.collects_evidence:
            evidence_paths.append((path, together))
        if info.ends_playbook:
            ended_by = step.id
        seen.add(step.id)
    _check_objectives(spec, catalog, problem)
    return problems


def branch_path(spec: PlaybookSpec, step_id: str) -> list[tuple[str, set[str]]]:
    """The decisions a step depends on, outermost first, each with the cases that run it."""
    path: list[tuple[str, set[str]]] = []
    membership = spec.branch_of(step_id)
    while membership is not None and all(membership[0] != d for d, _ in path):
        path.insert(0, membership)
        membership = spec.branch_of(membership[0])
    return path


def _covers(evidence: list[tuple[str, set[str]]], changing: list[tuple[str, set[str]]]) -> bool:
    """Whether evidence kept on ``evidence``'s branches has been kept whenever a step on
    ``changing``'s branches runs: each decision it depends on, the changing step depends on
    too, through cases that all run it."""
    taken = dict(changing)
    return all(decision in taken and taken[decision] <= cases for decision, cases in evidence)


def _check_decisions(spec: PlaybookSpec, catalog: ActionCatalog, problem: Any) -> None:
    """Each decision names later steps of the playbook, each step on at most one decision's
    branches, and no announcement or close on a branch."""
    order = {step.id: index for index, step in enumerate(spec.steps)}
    owner: dict[str, str] = {}
    for index, step in enumerate(spec.steps):
        for case, ids in step.branches.items():
            for target in ids:
                if target not in order:
                    problem(step.id, f"branch {case} names step '{target}', which does not exist", "fix the id")
                    continue
                if order[target] <= index:
                    problem(
                        step.id,
                        f"branch {case} names step '{target}', which comes before the decision",
                        "move the step after the decision (a decision runs later steps only)",
                    )
                if owner.get(target, step.id) != step.id:
                    problem(
                        step.id,
                        f"step '{target}' is on branches of two decisions ({owner[target]} and {step.id})",
                        "nest the decisions: put the inner decision on the outer one's branch",
                    )
                owner.setdefault(target, step.id)
                info = catalog.get(spec.steps[order[target]].action)
                if info is not None and (info.ends_playbook or info.name == ANNOUNCE_ACTION):
                    problem(
                        step.id,
                        f"branch {case} names step '{target}' ({info.name}), which every path must run",
                        "take it off the branch",
                    )


def _check_parallel(spec: PlaybookSpec, catalog: ActionCatalog, problem: Any) -> None:
    """Each parallel step runs the steps right after it, each step by one parallel step at most,
    and only steps that can run beside others: actions that need no responder and do not end
    or announce the playbook (a run pauses as a whole for an approval)."""
    order = {step.id: index for index, step in enumerate(spec.steps)}
    owner: dict[str, str] = {}
    on_branch = {target for step in spec.steps for ids in step.branches.values() for target in ids}
    for index, step in enumerate(spec.steps):
        if not step.parallel:
            continue
        for target in step.parallel:
            if target not in order:
                problem(step.id, f"parallel names step '{target}', which does not exist", "fix the id")
                continue
            if owner.get(target, step.id) != step.id:
                problem(
                    step.id,
                    f"step '{target}' is run by two parallel steps ({owner[target]} and {step.id})",
                    "name it once",
                )
            owner.setdefault(target, step.id)
            member = spec.steps[order[target]]
            if member.parallel or member.branches:
                kind = "a parallel step" if member.parallel else "a decision"
                problem(
                    step.id,
                    f"step '{target}' is {kind}: a parallel step runs actions",
                    "run it before or after the parallel step",
                )
            if member.approval is not None:
                problem(
                    step.id,
                    f"step '{target}' waits for an approval: a run pauses as a whole for one, not beside others",
                    "move it after the parallel step",
                )
            info = catalog.get(member.action)
            if info is not None and (info.ends_playbook or info.name == ANNOUNCE_ACTION):
                problem(
                    step.id, f"step '{target}' ({info.name}) runs once, in order", "move it out of the parallel step"
                )
            if target in on_branch:
                problem(
                    step.id,
                    f"step '{target}' is named by a decision's branch too",
                    f"name the parallel step '{step.id}' on the branch instead (the steps it runs go with it)",
                )
        following = [s.id for s in spec.steps[index + 1 : index + 1 + len(step.parallel)]]
        if set(following) != set(step.parallel) and all(t in order for t in step.parallel):
            problem(
                step.id,
                f"the steps it runs ({', '.join(step.parallel)}) are not the steps right after it",
                f"list them right after '{step.id}' (in any order)",
            )


def _check_objectives(spec: PlaybookSpec, catalog: ActionCatalog, problem: Any) -> None:
    steps = {step.id: step for step in spec.steps}
    changing = [s.id for s in spec.steps if (info := catalog.get(s.action)) is not None and info.changes_things]
    ids: set[str] = set()
    for objective in spec.objectives:
        if objective.id in ids:
            problem(None, f"objective '{objective.id}' is declared twice", "give every objective a unique id")
        ids.add(objective.id)
        for step_id in objective.any_of:
            step = steps.get(step_id)
            info = catalog.get(step.action) if step is not None else None
            if step is None:
                problem(None, f"objective '{objective.id}' names step '{step_id}', which does not exist", "fix the id")
            elif info is not None and not info.changes_things:
                problem(
                    None,
                    f"objective '{objective.id}' names step '{step_id}' ({step.action}), which changes nothing "
                    "at the target and so cannot be verified there",
                    "name the changing steps whose verified outcome meets the objective",
                )
    if changing and not any(o.phase == "containment" for o in spec.objectives):
        problem(
            None,
            f"the playbook changes things ({', '.join(changing)}) but declares no containment objective",
            "add `objectives: [{id: ..., title: ..., any_of: [<changing step ids>]}]`",
        )


def _check_inputs(
    step: Step,
    fields: dict[str, Any],
    earlier: set[str],
    problem: Any,
) -> None:
    for name in step.inputs:
        if name not in fields:
            problem(step.id, f"input '{name}' is not accepted by '{step.action}'", f"use one of {sorted(fields)}")
    for name, field in fields.items():
        if field.is_required() and name not in step.inputs:
            problem(step.id, f"required input '{name}' of '{step.action}' is missing", f"add `with: {{{name}: ...}}`")
    expressions = [f"{{{{ {e} }}}}" for e in (step.when, step.switch, step.if_) if e]  # read as templates
    templates = [v for v in _strings(step.inputs)] + expressions
    for source in templates:
        try:
            roots = referenced_roots(source)
            steps = referenced_steps(source)
        except TemplateProblem as exc:
            problem(step.id, str(exc), "fix the template syntax")
            continue
        for root in roots - TEMPLATE_ROOTS:
            problem(step.id, f"template {source!r} reads unknown name '{root}'", f"use {sorted(TEMPLATE_ROOTS)}")
        for ref in steps - earlier:
            problem(step.id, f"template {source!r} reads step '{ref}' which does not run before it", "reorder")


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@dataclass(frozen=True)
class LoadedSpec:
    spec: PlaybookSpec
    path: Path


def load_specs(directory: Path, catalog: ActionCatalog) -> list[LoadedSpec]:
    """Load and validate every ``*.yaml`` spec; any problem in any file raises."""
    loaded: list[LoadedSpec] = []
    problems: list[SpecProblem] = []
    names: dict[str, Path] = {}
    for path in sorted(directory.glob("*.y*ml")):
        try:
            spec = parse_spec(path.read_text(encoding="utf-8"), path.name)
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        if spec.name in names:
            problems.append(
                SpecProblem(
                    path.name,
                    None,
                    f"playbook name '{spec.name}' is also used by {names[spec.name].name}",
                    "give each playbook a unique name",
                )
            )
        names[spec.name] = path
        problems.extend(validate_spec(spec, catalog, path.name))
        loaded.append(LoadedSpec(spec, path))
    for item in loaded:
        for name in item.spec.supersedes:
            if name not in names or name == item.spec.name:
                fix = "name another playbook in playbook_specs/" if name == item.spec.name else "fix the name"
                problems.append(SpecProblem(item.path.name, None, f"supersedes '{name}': no such other playbook", fix))
    if problems:
        raise SpecError(problems)
    return loaded
