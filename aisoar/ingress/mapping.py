"""Declarative mappings: any JSON source turned into aisoar's alert shape without code.

A mapping says where each field of an alert comes from in the sender's payload. Values
are templates over paths: ``"{labels.alertname}"``, ``"{repository.full_name}#{alert.number}"``;
``{$.x}`` reads from the whole document when the mapping splits it into ``items``. A
template whose paths are all missing gives nothing, so ``from`` can list fall-backs:

    severity:
      from: ["{labels.severity}", "{$.commonLabels.severity}"]
      map: {critical: critical, warning: medium, info: info}
      default: medium

The result of a mapping is the generic alert document (``GenericAlertIn``), validated by the
same rules as any other alert. Nothing in a payload is ever evaluated: a path only walks
objects and lists, a template only substitutes text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as MappingType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aisoar.models import Agent, CloudCredential, LLMApiKey, Model, Session, Severity, Tool, User, VectorIndex
from aisoar.taxonomy import IncidentType

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SEGMENT = re.compile(r"^(\$|[A-Za-z0-9_@:\-]+)$")
ENTITY_MODELS: dict[str, type[BaseModel]] = {
    "llm_api_key": LLMApiKey,
    "model": Model,
    "vector_index": VectorIndex,
    "agent": Agent,
    "tool": Tool,
    "session": Session,
    "user": User,
    "cloud_credential": CloudCredential,
}
STATES = ("firing", "resolved")


def _check_template(template: str) -> str:
    for path in _PLACEHOLDER.findall(template):
        segments = path.strip().split(".")
        if not path.strip() or not all(_SEGMENT.match(s) for s in segments) or "$" in segments[1:]:
            raise ValueError(
                f"'{{{path}}}' is not a path: write dotted keys, e.g. {{labels.severity}} or {{$.receiver}}"
            )
    if template.count("{") != template.count("}"):
        raise ValueError(f"unbalanced braces in '{template}'")
    return template


Template = Annotated[str, Field(max_length=500)]


class Pick(BaseModel):
    """A value: the first template in ``from`` that gives text, through ``map``, else ``default``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: list[Template] = Field(alias="from", min_length=1, max_length=10)
    map: dict[str, str | None] | None = Field(
        None, description="translate the value (compared case-insensitively); unmapped values use the default"
    )
    default: str | None = None

    @field_validator("from_", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("from_")
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        return [_check_template(t) for t in value]


Value = Template | Pick


def _values(spec: Value | None) -> list[str]:
    """The literal outcomes a value spec can have (constants, map results, default)."""
    if spec is None:
        return []
    if isinstance(spec, str):
        return [] if _PLACEHOLDER.search(spec) else [spec]
    outcomes = [v for v in (spec.map or {}).values() if v is not None]
    if spec.map is None:
        outcomes += [t for t in spec.from_ if not _PLACEHOLDER.search(t)]
    if spec.default is not None:
        outcomes.append(spec.default)
    return outcomes


class EntitySpec(BaseModel):
    """One entity of the alert; left out when a field it needs is missing from the payload."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["llm_api_key", "model", "vector_index", "agent", "tool", "session", "user", "cloud_credential"]
    fields: dict[str, Value] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_fields(self) -> EntitySpec:
        known = set(ENTITY_MODELS[self.type].model_fields) - {"type", "fingerprint"}
        unknown = sorted(set(self.fields) - known - {"secret"})
        if unknown:
            raise ValueError(f"{self.type} has no field {', '.join(unknown)}; it has: {', '.join(sorted(known))}")
        for value in self.fields.values():
            if isinstance(value, str):
                _check_template(value)
        return self


class EventFilter(BaseModel):
    """Senders that name the event in a header (GitHub: ``X-GitHub-Event``)."""

    model_config = ConfigDict(extra="forbid")
    header: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")
    accept: list[str] = Field(min_length=1)
    ignore: list[str] = Field(default_factory=list, description="acknowledged with 200, nothing stored (e.g. ping)")


class Mapping(BaseModel):
    """Where each field of an alert comes from in the sender's payload."""

    model_config = ConfigDict(extra="forbid")

    items: str | None = Field(None, description="path of a list in the payload: one alert per element")
    event: EventFilter | None = None
    when: dict[Template, list[str]] = Field(
        default_factory=dict,
        description="keep an item only when each template gives one of the listed values (compared case-insensitively)",
    )
    id: Value
    title: Value
    description: Value | None = None
    severity: Value | None = None
    type: Value | None = None
    state: Value | None = Field(None, description="firing (default) or resolved")
    fingerprint: Value | None = Field(None, description="alerts with the same fingerprint join one incident")
    occurred_at: Value | None = None
    labels: dict[str, Value] = Field(default_factory=dict, max_length=64)
    labels_from: list[str] = Field(
        default_factory=list, description="paths of objects whose text values are copied into the labels"
    )
    entities: list[EntitySpec] = Field(default_factory=list, max_length=50)
    notes: list[Value] = Field(
        default_factory=list, max_length=10, description="lines put on the incident's timeline with the alert"
    )

    @model_validator(mode="after")
    def _checked(self) -> Mapping:
        for value in (self.id, self.title, self.description, self.fingerprint, self.occurred_at, *self.notes):
            if isinstance(value, str):
                _check_template(value)
        for template in self.when:
            _check_template(template)
        for path in [*self.labels_from, *([self.items] if self.items else [])]:
            _check_template("{" + path + "}")
        checks: list[tuple[str, Value | None, set[str]]] = [
            ("severity", self.severity, {s.value for s in Severity}),
            ("type", self.type, {t.value for t in IncidentType}),
            ("state", self.state, set(STATES)),
        ]
        for name, spec, allowed in checks:
            bad = sorted(v for v in _values(spec) if v not in allowed)
            if bad:
                raise ValueError(f"{name} can only be one of {', '.join(sorted(allowed))}; not {', '.join(bad)}")
        return self


# -- applying a mapping ------------------------------------------------------------------


def lookup(document: Any, item: Any, path: str) -> Any:
    """The value at a dotted path (``$.`` from the document root), or None. A key that itself
    holds dots (falcosidekick's ``"container.id"``) is found too: the longest key that matches
    the rest of the path wins."""
    segments = path.strip().split(".")
    value = item
    if segments[0] == "$":
        value, segments = document, segments[1:]
    at = 0
    while at < len(segments):
        if isinstance(value, MappingType):
            for end in range(len(segments), at, -1):
                key = ".".join(segments[at:end])
                if key in value:
                    value, at = value[key], end
                    break
            else:
                return None
        elif isinstance(value, list) and segments[at].isdigit() and int(segments[at]) < len(value):
            value, at = value[int(segments[at])], at + 1
        else:
            return None
    return value


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text if text.strip() else None


def render(template: str, document: Any, item: Any) -> str | None:
    """The template with its paths filled in; None when every path in it is missing."""
    found = False

    def fill(match: re.Match[str]) -> str:
        nonlocal found
        text = _text(lookup(document, item, match.group(1)))
        found = found or text is not None
        return text or ""

    filled = _PLACEHOLDER.sub(fill, template)
    if _PLACEHOLDER.search(template) and not found:
        return None
    return filled.strip() or None


def resolve(spec: Value | None, document: Any, item: Any) -> str | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        return render(spec, document, item)
    lowered = {k.lower(): v for k, v in (spec.map or {}).items()}
    for template in spec.from_:  # the first that gives text (with a map: the first that maps)
        text = render(template, document, item)
        if text is None:
            continue
        if spec.map is None:
            return text
        if text.lower() in lowered:
            return lowered[text.lower()]
    return spec.default


def _has_paths(spec: Value) -> bool:
    templates = [spec] if isinstance(spec, str) else spec.from_
    return any(_PLACEHOLDER.search(t) for t in templates)


def apply(mapping: Mapping, document: Any) -> list[tuple[dict[str, Any], Any]]:
    """The generic alert documents the payload maps to (not yet validated), each with the item
    of the payload it comes from."""
    if mapping.items is None:
        items: list[Any] = [document]
    else:
        found = lookup(document, document, mapping.items)
        items = found if isinstance(found, list) else [found] if isinstance(found, MappingType) else []
    return [(_one(mapping, document, item), item) for item in items if _wanted(mapping, document, item)]


def _wanted(mapping: Mapping, document: Any, item: Any) -> bool:
    for template, allowed in mapping.when.items():
        text = render(template, document, item)
        if text is None or text.lower() not in {a.lower() for a in allowed}:
            return False
    return True


def _one(mapping: Mapping, document: Any, item: Any) -> dict[str, Any]:
    def value(spec: Value | None) -> str | None:
        return resolve(spec, document, item)

    candidate: dict[str, Any] = {"id": value(mapping.id), "title": value(mapping.title)}
    optional = {
        "description": value(mapping.description),
        "severity": value(mapping.severity),
        "incident_type": value(mapping.type),
        "state": value(mapping.state),
        "fingerprint": value(mapping.fingerprint),
        "occurred_at": value(mapping.occurred_at),
    }
    candidate |= {k: v for k, v in optional.items() if v is not None}
    labels: dict[str, str] = {}
    for path in mapping.labels_from:
        source = lookup(document, item, path)
        if isinstance(source, MappingType):
            labels |= {str(k): t for k, v in source.items() if (t := _text(v)) is not None}
    labels |= {k: v for k, spec in mapping.labels.items() if (v := value(spec)) is not None}
    candidate["labels"] = labels
    entities = []
    for entity in mapping.entities:
        fields = {k: value(spec) for k, spec in entity.fields.items()}
        taken = [fields[k] for k, spec in entity.fields.items() if _has_paths(spec)]
        if taken and all(v is None for v in taken):
            continue  # nothing of this entity in the payload (constants alone do not make one)
        entities.append({"type": entity.type, **{k: v for k, v in fields.items() if v is not None}})
    candidate["entities"] = _complete(entities)
    candidate["notes"] = [n for spec in mapping.notes if (n := value(spec)) is not None]
    return candidate


def _complete(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entities that have every field their type requires (a model needs a name ...)."""
    complete = []
    for entity in entities:
        model = ENTITY_MODELS[entity["type"]]
        required = {name for name, info in model.model_fields.items() if info.is_required()}
        if required <= set(entity):
            complete.append(entity)
    return complete
