"""Source adapters: turn a source's payload into an ``Alert``.

Every adapter redacts secrets first: the clear value of a leaked key becomes a
fingerprint and never reaches the inbox, the logs or the UI.
"""

from __future__ import annotations

import hashlib
import json
import secrets as _secrets
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from aisoar.models import Alert, Entity, LLMApiKey, SecretFingerprint, Severity, utcnow
from aisoar.secrets import find_secrets, redact
from aisoar.taxonomy import IncidentType


class PayloadError(ValueError):
    """The payload does not fit the source's schema; ``errors`` says where and why."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))


class KeyEntityIn(BaseModel):
    """An LLM API key as a detection source reports it: possibly with the key itself."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["llm_api_key"]
    provider: Annotated[str, Field(max_length=64)]
    key_id: Annotated[str, Field(max_length=256)] | None = None
    project_id: Annotated[str, Field(max_length=256)] | None = None
    secret: Annotated[str, Field(min_length=8, max_length=512)] | None = Field(
        None, description="the leaked key in clear; it is fingerprinted and dropped at once"
    )
    key_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class GenericAlertIn(BaseModel):
    """The generic JSON source: any detector that can send this shape."""

    model_config = ConfigDict(extra="allow")
    id: Annotated[str, Field(min_length=1, max_length=256)]
    title: Annotated[str, Field(min_length=1, max_length=500)]
    description: Annotated[str, Field(max_length=20_000)] = ""
    severity: Severity = Severity.medium
    incident_type: IncidentType | None = None
    occurred_at: datetime | None = None
    labels: dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict, max_length=64
    )
    entities: list[dict[str, Any]] = Field(default_factory=list, max_length=50)
    fingerprint: Annotated[str, Field(max_length=256)] | None = None


_entity_adapter: TypeAdapter[Entity] = TypeAdapter(Entity)
REDACTED = "[redacted secret]"


def _errors(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    # Never echo the offending input back: it may be the secret.
    return [{"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def _entity(raw: dict[str, Any], index: int, fingerprint: SecretFingerprint | None) -> Entity:
    if raw.get("type") == "llm_api_key":
        try:
            key = KeyEntityIn.model_validate({k: v for k, v in raw.items() if k != "secret"})
        except ValidationError as exc:
            raise PayloadError(_errors(exc, ("entities", index))) from None
        return LLMApiKey(
            provider=key.provider,
            key_id=key.key_id,
            project_id=key.project_id,
            fingerprint=fingerprint,
            gateway_key_hash=fingerprint.sha256 if fingerprint else key.key_sha256,
        )
    try:
        return _entity_adapter.validate_python(raw)
    except ValidationError as exc:
        raise PayloadError(_errors(exc, ("entities", index))) from None


def correlation_fingerprint(
    source: str, given: str | None, incident_type: str | None, entity_keys: list[str], title: str
) -> str:
    basis = f"given:{source}:{given}" if given else f"{incident_type}|{'|'.join(sorted(entity_keys)) or title}"
    return hashlib.sha256(basis.encode()).hexdigest()


def generic_json(source: str, body: bytes, received_at: datetime | None = None) -> Alert:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise PayloadError([{"loc": [], "msg": "the body must be a JSON object", "type": "object_type"}])
    errors: list[dict[str, Any]] = []
    try:
        payload = GenericAlertIn.model_validate(document)
    except ValidationError as exc:
        errors += _errors(exc)
    for index, raw in enumerate(document.get("entities") or []):
        if isinstance(raw, dict):
            try:
                _entity(raw, index, None)
            except PayloadError as exc:
                errors += exc.errors
    if errors:
        raise PayloadError(errors)
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
    redacted = redact(document, found)
    for raw in redacted.get("entities", []):
        if isinstance(raw, dict) and "secret" in raw:
            raw["secret"] = REDACTED
    entities = [_entity(raw, i, declared[i]) for i, raw in enumerate(redacted.get("entities", []))]
    title = redact(payload.title, found)
    description = redact(payload.description, found)
    labels = redact(payload.labels, found)
    found.clear()
    alert = Alert(
        id=f"ALR-{utcnow():%Y%m%d}-{_secrets.token_hex(6)}",
        source=source,
        source_id=payload.id,
        received_at=received_at or utcnow(),
        title=title,
        description=description,
        severity=payload.severity,
        incident_type=payload.incident_type,
        entities=entities,
        labels=labels,
        raw=redacted,
        raw_sha256=hashlib.sha256(body).hexdigest(),
        fingerprint=correlation_fingerprint(
            source, payload.fingerprint, payload.incident_type, [e.key for e in entities], payload.title
        ),
    )
    if find_secrets(alert.model_dump_json()):
        raise PayloadError([{"loc": [], "msg": "a secret could not be redacted; nothing was stored", "type": "secret"}])
    return alert


Adapter = Callable[[str, bytes], Alert]
ADAPTERS: dict[str, Adapter] = {"generic": generic_json}


def adapter_for(source: str) -> Adapter:
    """Sources named ``generic`` or ``generic-*`` use the generic JSON adapter."""
    if source in ADAPTERS:
        return ADAPTERS[source]
    if source.startswith("generic-"):
        return generic_json
    raise KeyError(source)
