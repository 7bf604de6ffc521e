"""Who may approve: people with verifiable identities, and the roles playbooks name.

A playbook's gate names roles (``incident-commander``); this directory (``approvers.yaml``,
or the file ``AISOAR_APPROVERS_FILE`` names) says which people hold each role, and how each
person is recognised: a Slack user id (a button click is signed by Slack for that user), an
email, a PagerDuty user. A name typed into a form proves nothing; an answer counts only
when it comes from one of these identities (a Slack click, or a one-time code that was sent
to that person). A wrong file stops the start with the file and the field named.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from aisoar.specs import PlaybookSpec

PersonId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
RoleName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,30}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    slack: str | None = Field(None, description="Slack user id (U...): their button clicks count")
    email: str | None = Field(None, description="where a one-time code is mailed, and how Slack finds them")

    @model_validator(mode="after")
    def _identities(self) -> Person:
        if self.slack is not None and not SLACK_USER.match(self.slack):
            raise ValueError(f"slack: {self.slack!r} is not a Slack user id (U... or W...)")
        if self.email is not None and not EMAIL.match(self.email):
            raise ValueError(f"email: {self.email!r} is not an email address")
        if self.slack is None and self.email is None:
            raise ValueError("give a Slack user id or an email: without one this person cannot be verified")
        return self


class Role(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    people: list[PersonId] = Field(min_length=1)
    title: str | None = None


class ApproverDirectory(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    people: dict[PersonId, Person] = Field(default_factory=dict)
    roles: dict[RoleName, Role] = Field(default_factory=dict)
    source: str = Field("", exclude=True, description="where it was read from, for messages")

    @model_validator(mode="after")
    def _roles_name_people(self) -> ApproverDirectory:
        for role, spec in self.roles.items():
            for person in spec.people:
                if person not in self.people:
                    raise ValueError(f"roles.{role}: '{person}' is not under people")
        slack_ids: dict[str, str] = {}
        for person_id, someone in self.people.items():
            if someone.slack and (other := slack_ids.setdefault(someone.slack, person_id)) != person_id:
                raise ValueError(f"people.{person_id}: Slack id {someone.slack} is also {other}'s")
        return self

    def members(self, names: list[str]) -> list[str]:
        """The people ids a gate's approvers resolve to: roles expand to their people, a person
        id stands for itself; unknown names resolve to nobody (``unknown`` says which)."""
        found: list[str] = []
        for name in names:
            ids = self.roles[name].people if name in self.roles else [name] if name in self.people else []
            found.extend(i for i in ids if i not in found)
        return found

    def unknown(self, names: list[str]) -> list[str]:
        return [n for n in names if n not in self.roles and n not in self.people]

    def by_slack(self, user_id: str) -> str | None:
        return next((pid for pid, p in self.people.items() if p.slack == user_id), None)

    def resolve(self, identity: str) -> str | None:
        """A person id from a person id, a Slack user id or an email (who triggered a run)."""
        value = identity.strip()
        if value in self.people:
            return value
        lowered = value.lower()
        return next(
            (pid for pid, p in self.people.items() if p.slack == value or (p.email or "").lower() == lowered), None
        )

    def label(self, person_id: str) -> str:
        person = self.people.get(person_id)
        return f"{person.name} ({person_id})" if person else person_id


class DirectoryError(ValueError):
    pass


def load_directory(path: Path) -> ApproverDirectory:
    """The directory in ``path``; an absent file is an empty directory (nobody can approve,
    and every gate says so at start-up)."""
    if not path.exists():
        return ApproverDirectory(source=str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DirectoryError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise DirectoryError(f"{path}: the top level must be a mapping with people: and roles:")
    try:
        return ApproverDirectory.model_validate({**raw, "source": str(path)})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise DirectoryError(f"{path}: {where}: {first['msg']}") from exc


def gate_problems(specs: Iterable[PlaybookSpec], directory: ApproverDirectory) -> list[str]:
    """What makes a gate impossible to answer with this directory: a role or person it does
    not know, a quorum larger than the people it names, an escalation paging an unknown role."""
    problems = []
    where = directory.source or "the approvers directory"
    for spec in specs:
        for step in spec.steps:
            gate = step.approval
            if gate is None:
                continue
            at = f"playbook {spec.name}, step {step.id}"
            if unknown := directory.unknown(list(gate.approvers)):
                problems.append(f"{at}: approvers {', '.join(unknown)} are not in {where}")
            people = directory.members(list(gate.approvers))
            if len(people) < gate.quorum:
                problems.append(
                    f"{at}: quorum {gate.quorum} needs {gate.quorum} people, but {', '.join(gate.approvers)} "
                    f"resolve to {len(people)} in {where}"
                )
            for escalation in gate.escalation:
                if escalation.page is not None and escalation.page not in directory.roles:
                    problems.append(f"{at}: escalation pages role '{escalation.page}', which is not in {where}")
    return problems
