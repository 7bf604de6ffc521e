"""From a delivery's bytes to ``Alert`` objects, in the source's format.

Every body is read as JSON within the limits (``limits``), mapped to aisoar's generic alert
shape (by a mapping, or as it is for the generic format), validated, and redacted: the
clear value of a leaked secret becomes a fingerprint and never reaches the inbox, the logs
or the UI. Errors name where in the schema something is wrong, never what the sender wrote.
"""

from __future__ import annotations

import hashlib
import json
import secrets as _secrets
from collections.abc import Mapping as MappingType
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from aisoar.ingress.builtin import Format
from aisoar.ingress.limits import BodyError, parse_json
from aisoar.ingress.mapping import apply
from aisoar.models import Alert, Entity, LLMApiKey, SecretFingerprint, Severity, utcnow
from aisoar.secrets import find_secrets, redact, redact_clipped, redaction_marker
from aisoar.taxonomy import IncidentType

MAX_EXTRA_BYTES = 16 * 1024
TITLE_MAX = 500
DESCRIPTION_MAX = 20_000


class PayloadError(ValueError):
    """The payload does not fit the source's schema; ``errors`` says where and why."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))


class KeyEntityIn(BaseModel):
    """An LLM API key as a detection source reports it: possibly with the key itself."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["llm_api_key"]
    provider: Annotated[str, Field(min_length=1, max_length=64)]
    key_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    project_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    secret: Annotated[str, Field(min_length=8, max_length=512)] | None = Field(
        None, description="the leaked key in clear; it is fingerprinted and dropped at once"
    )
    key_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    gateway_key_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class GenericAlertIn(BaseModel):
    """The generic JSON source: any detector that can send this shape."""

    model_config = ConfigDict(extra="allow")
    id: Annotated[str, Field(min_length=1, max_length=256)]
    title: Annotated[str, Field(min_length=1, max_length=TITLE_MAX)]
    description: Annotated[str, Field(max_length=DESCRIPTION_MAX)] = ""
    severity: Severity = Severity.medium
    incident_type: IncidentType | None = None
    state: Literal["firing", "resolved"] = Field("firing", description="resolved: the source says it is over")
    occurred_at: datetime | None = None
    labels: dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict, max_length=64
    )
    entities: list[dict[str, Any]] = Field(default_factory=list, max_length=50)
    fingerprint: Annotated[str, Field(max_length=256)] | None = None
    notes: list[Annotated[str, Field(max_length=1000)]] = Field(default_factory=list, max_length=10)


SCHEMA_NAMES = (
    set(GenericAlertIn.model_fields)
    | set(KeyEntityIn.model_fields)
    | {"name", "version", "digest", "store", "instance", "agent", "session_id", "user_id", "ip"}
    | {"credential_id", "principal", "sha256", "prefix", "last4", "mapping"}
)
_entity_adapter: TypeAdapter[Entity] = TypeAdapter(Entity)
_when: TypeAdapter[datetime] = TypeAdapter(datetime)
REDACTED = "[redacted secret]"


@dataclass
class Reading:
    """What one delivery holds: its alerts, or why nothing in it is an alert."""

    alerts: list[Alert] = field(default_factory=list)
    ignored: str | None = None


def _safe_loc(loc: tuple[Any, ...] | list[Any]) -> list[Any]:
    # A location names the schema, never the sender's data: keys the schema does not know
    # (label names, undeclared fields) are shown as <key>.
    return [part if isinstance(part, int) or part in SCHEMA_NAMES else "<key>" for part in loc]


def _message(error: Any) -> str:
    """Pydantic's message, except where pydantic quotes the input (an unknown type tag)."""
    if error["type"] == "union_tag_invalid":
        return f"unknown type; expected one of: {error.get('ctx', {}).get('expected_tags', '')}"
    return str(error["msg"])


def _errors(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    # Never echo the offending input back: it may be the secret.
    return [{"loc": _safe_loc((*prefix, *e["loc"])), "msg": _message(e), "type": e["type"]} for e in exc.errors()]


def _entity(raw: dict[str, Any], index: int, fingerprint: SecretFingerprint | None) -> Entity:
    if raw.get("type") == "llm_api_key":
        try:
            key = KeyEntityIn.model_validate({k: v for k, v in raw.items() if k != "secret"})
        except ValidationError as exc:
            raise PayloadError(_errors(exc, ("entities", index))) from None
        try:  # the entity's own rules too (a provider of spaces only, say), never an uncaught error
            return LLMApiKey(
                provider=key.provider,
                key_id=key.key_id,
                project_id=key.project_id,
                fingerprint=fingerprint,
                gateway_key_hash=fingerprint.sha256 if fingerprint else key.gateway_key_hash or key.key_sha256,
            )
        except ValidationError as exc:
            raise PayloadError(_errors(exc, ("entities", index))) from None
    try:
        return _entity_adapter.validate_python(raw)
    except ValidationError as exc:
        raise PayloadError(_errors(exc, ("entities", index))) from None


def correlation_fingerprint(
    source: str, given: str | None, incident_type: str | None, entity_keys: list[str], title: str
) -> str:
    basis = f"given:{source}:{given}" if given else f"{incident_type}|{'|'.join(sorted(entity_keys)) or title}"
    return hashlib.sha256(basis.encode()).hexdigest()


# -- reading a delivery ------------------------------------------------------------------


def read(fmt: Format, source: str, body: bytes, headers: MappingType[str, str] | None = None) -> Reading:
    """The alerts in one delivery. Raises ``BodyError`` (not JSON, over a limit) or
    ``PayloadError`` (does not fit the format)."""
    document = parse_json(body)
    if fmt.mapping is None:
        if not isinstance(document, dict):
            raise PayloadError([{"loc": [], "msg": "the body must be a JSON object", "type": "object_type"}])
        return Reading([generic_alert(source, document, body)])
    mapping = fmt.mapping
    if mapping.event is not None:
        event = (headers or {}).get(mapping.event.header.lower(), "")
        if event in mapping.event.ignore:
            return Reading(ignored=f"{mapping.event.header} {event[:64]}: acknowledged, nothing to do")
        if event not in mapping.event.accept:
            return Reading(
                ignored=f"this source takes {mapping.event.header}: {', '.join(mapping.event.accept)}; "
                "other events are acknowledged and not stored"
            )
    if fmt.prepare is not None:
        document = fmt.prepare(document)
    known: dict[str, SecretFingerprint] = {}
    redact(document, known)  # the secrets anywhere in the delivery, to take out of what is built from it
    mapped = apply(mapping, document)
    if not mapped:
        return Reading(ignored="nothing in this delivery is a finding for this source's mapping")
    alerts = []
    for index, (candidate, item) in enumerate(mapped):
        prefix: tuple[Any, ...] = ("mapping",) if len(mapped) == 1 else ("mapping", index)
        payload = _mapped_payload(source, candidate, prefix, known)
        alerts.append(_build(source, payload, _raw_record(mapping.items, document, item), body))
    return Reading(alerts)


def _raw_record(path: str | None, document: Any, item: Any) -> dict[str, Any]:
    """The raw record kept with a mapped alert: the delivery, or its item and what is around it."""
    if path is None:
        return document if isinstance(document, dict) else {"delivery": document}
    around = {k: v for k, v in document.items() if k != path} if isinstance(document, dict) else {}
    return {"item": item, "delivery": around}


def _mapped_payload(
    source: str, candidate: dict[str, Any], prefix: tuple[Any, ...], known: dict[str, SecretFingerprint]
) -> GenericAlertIn:
    """A mapped alert, validated; what the sender got wrong is noted, not refused, where a
    sensible default exists (the sender's detection is never lost for an odd severity)."""
    notes: list[str] = list(candidate.get("notes", []))
    if not candidate.get("id"):
        raise PayloadError(
            [{"loc": [*prefix, "id"], "msg": "the mapping found no id in the payload", "type": "missing"}]
        )
    if not candidate.get("title"):
        candidate["title"] = f"alert from {source}"
        notes.append("the payload has no title where the source's mapping looks for one")
    # Cut to the limits only after redaction: a cut must never leave part of a key behind.
    candidate["title"] = redact_clipped(_known(candidate["title"], known), {}, TITLE_MAX)
    if "description" in candidate:
        candidate["description"] = redact_clipped(_known(candidate["description"], known), {}, DESCRIPTION_MAX)
    if candidate.get("severity") not in {s.value for s in Severity} and "severity" in candidate:
        notes.append("the payload's severity is not one aisoar knows; medium is assumed")
        candidate.pop("severity")
    if candidate.get("incident_type") not in {t.value for t in IncidentType} and "incident_type" in candidate:
        notes.append("the payload's incident type is not one aisoar knows; the alert is routed by its other fields")
        candidate.pop("incident_type")
    if candidate.get("state") not in ("firing", "resolved"):
        candidate.pop("state", None)
    if "occurred_at" in candidate:
        try:
            _when.validate_python(candidate["occurred_at"])
        except ValidationError:
            notes.append("the payload's time is not one aisoar reads; the time of receipt stands")
            candidate.pop("occurred_at")
    labels = list(candidate.get("labels", {}).items())[:64]
    candidate["labels"] = {
        redact_clipped(_known(k, known), {}, 128): redact_clipped(_known(v, known), {}, 1024) for k, v in labels
    }
    candidate["notes"] = [redact_clipped(_known(n, known), {}, 1000) for n in notes[:10]]
    candidate["id"] = redact_clipped(_known(candidate["id"], known), {}, 256)
    try:
        return GenericAlertIn.model_validate(candidate)
    except ValidationError as exc:
        raise PayloadError(_errors(exc, prefix)) from None


def generic_json(source: str, body: bytes, received_at: datetime | None = None) -> Alert:
    """One alert in the generic shape (kept for callers that have a body, not a format)."""
    document = parse_json(body)
    if not isinstance(document, dict):
        raise PayloadError([{"loc": [], "msg": "the body must be a JSON object", "type": "object_type"}])
    return generic_alert(source, document, body, received_at)


def generic_alert(source: str, document: dict[str, Any], body: bytes, received_at: datetime | None = None) -> Alert:
    errors: list[dict[str, Any]] = []
    payload: GenericAlertIn | None = None
    try:
        payload = GenericAlertIn.model_validate(document)
    except ValidationError as exc:
        errors += _errors(exc)
    extra = payload.model_extra if payload is not None else None
    if extra and len(json.dumps(extra)) > MAX_EXTRA_BYTES:
        errors.append(
            {
                "loc": [],
                "msg": f"undeclared fields take more than {MAX_EXTRA_BYTES} bytes; send less, or map the source",
                "type": "too_long",
            }
        )
    listed = document.get("entities")
    for index, raw in enumerate(listed[:50] if isinstance(listed, list) else []):
        if isinstance(raw, dict):
            try:
                _entity({k: v for k, v in raw.items() if k != "secret"}, index, None)
            except PayloadError as exc:
                errors += exc.errors
    if errors or payload is None:
        raise PayloadError(errors)
    return _build(source, payload, document, body, received_at)


def _build(
    source: str, payload: GenericAlertIn, raw_document: dict[str, Any], body: bytes, received_at: datetime | None = None
) -> Alert:
    # Fingerprint declared secrets, then redact every secret-shaped string anywhere.
    declared: list[SecretFingerprint | None] = []
    for index, raw in enumerate(payload.entities):
        secret = raw.get("secret")
        if secret is not None and (not isinstance(secret, str) or not 8 <= len(secret) <= 512):
            raise PayloadError(
                [
                    {
                        "loc": ["entities", index, "secret"],
                        "msg": "must be a string of 8..512 characters",
                        "type": "string_type",
                    }
                ]
            )
        declared.append(SecretFingerprint.of(secret) if secret else None)
    found: dict[str, SecretFingerprint] = {}
    clear = [raw["secret"] for raw in payload.entities if isinstance(raw.get("secret"), str)]
    redacted = _scrub(redact(raw_document, found), clear)
    _drop_declared_secrets(redacted)
    entity_dicts = redact(payload.entities, found)
    for raw in entity_dicts:
        raw.pop("secret", None)
    entities = [_entity(raw, i, declared[i]) for i, raw in enumerate(entity_dicts)]
    title = redact_clipped(_known(payload.title, found), found, TITLE_MAX)
    description = redact_clipped(_known(payload.description, found), found, DESCRIPTION_MAX)
    labels = {
        redact_clipped(_known(k, found), found, 128): redact_clipped(_known(v, found), found, 1024)
        for k, v in payload.labels.items()
    }
    notes = [redact_clipped(_known(n, found), found, 1000) for n in payload.notes]
    source_id = redact_clipped(_known(payload.id, found), found, 256)
    found.clear()
    alert = Alert(
        id=f"ALR-{utcnow():%Y%m%d}-{_secrets.token_hex(6)}",
        source=source,
        source_id=source_id,
        received_at=received_at or utcnow(),
        occurred_at=payload.occurred_at,
        title=title,
        description=description,
        severity=payload.severity,
        incident_type=payload.incident_type,
        state=payload.state,
        entities=entities,
        labels=labels,
        notes=notes,
        raw=redacted,
        raw_sha256=hashlib.sha256(body).hexdigest(),
        fingerprint=correlation_fingerprint(
            source, payload.fingerprint, payload.incident_type, [e.key for e in entities], payload.title
        ),
    )
    if find_secrets(alert.model_dump_json()):
        raise PayloadError([{"loc": [], "msg": "a secret could not be redacted; nothing was stored", "type": "secret"}])
    return alert


def _known(text: str, found: dict[str, SecretFingerprint]) -> str:
    """``text`` with every secret already found in the delivery replaced by its marker, also
    where its neighbours hide its shape (a mapped field glues payload values together)."""
    for secret in sorted(found, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, redaction_marker(found[secret]))
    return text


def _scrub(value: Any, clear: list[str]) -> Any:
    """``value`` with every declared secret replaced, whatever its shape (a mapping may take
    a key from anywhere in the payload, and it need not look like a known kind of key)."""
    if not clear:
        return value
    if isinstance(value, str):
        for secret in clear:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {_scrub(k, clear): _scrub(v, clear) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, clear) for v in value]
    return value


def _drop_declared_secrets(document: Any) -> None:
    """The ``secret`` of every declared key entity, wherever the raw record holds entities."""
    for holder in (document, document.get("item") if isinstance(document, dict) else None):
        if isinstance(holder, dict) and isinstance(holder.get("entities"), list):
            for raw in holder["entities"]:
                if isinstance(raw, dict) and "secret" in raw:
                    raw["secret"] = REDACTED


__all__ = ["BodyError", "GenericAlertIn", "PayloadError", "Reading", "correlation_fingerprint", "generic_json", "read"]
