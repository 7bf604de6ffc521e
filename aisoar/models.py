"""The core domain: alerts, incidents, and the AI assets they are about.

These models are the boundary types: everything the ingress accepts becomes an
``Alert``; everything the runner works on is an ``Incident``. Secrets never live here in
clear: an ``LLMApiKey`` carries a fingerprint, not the key.
"""

from __future__ import annotations

import enum
import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from aisoar.taxonomy import IncidentType


def utcnow() -> datetime:
    return datetime.now(UTC)


class Severity(enum.StrEnum):
    info = "info"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


class _Entity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @property
    def key(self) -> str:
        """A stable identity used to correlate alerts about the same asset."""
        raise NotImplementedError


_ID = Annotated[str, Field(min_length=1, max_length=256)]
# Names of systems ("OpenAI", " openai ") are compared in one spelling: lower case, trimmed.
_SystemName = Annotated[str, BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v)]


class SecretFingerprint(BaseModel):
    """How a leaked secret is remembered: never the secret, only what identifies it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    prefix: str = Field(max_length=8)
    last4: str = Field(max_length=4)

    @classmethod
    def of(cls, secret: str) -> SecretFingerprint:
        return cls(
            sha256=hashlib.sha256(secret.encode()).hexdigest(),
            # Shown only where enough stays hidden (>= 14 characters) that they cannot help guess it.
            prefix=secret[:6] if len(secret) >= 24 else "",
            last4=secret[-4:] if len(secret) >= 24 else "",
        )


class LLMApiKey(_Entity):
    type: Literal["llm_api_key"] = "llm_api_key"
    provider: Annotated[_SystemName, Field(min_length=1, max_length=64)] = Field(
        description="who issued the key: openai, anthropic, litellm ... (lower case)"
    )
    key_id: _ID | None = Field(None, description="the provider's id of the key, when known")
    project_id: _ID | None = None
    fingerprint: SecretFingerprint | None = None
    gateway_key_hash: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="the LLM gateway's id of the key (LiteLLM: sha256 of the key)",
    )

    @property
    def key(self) -> str:
        ident = self.key_id or (self.fingerprint.sha256 if self.fingerprint else self.gateway_key_hash)
        return f"llm_api_key:{self.provider}:{ident}"


class Model(_Entity):
    type: Literal["model"] = "model"
    name: _ID
    version: _ID | None = None
    digest: str | None = Field(None, max_length=128)

    @property
    def key(self) -> str:
        return f"model:{self.name}"


class VectorIndex(_Entity):
    type: Literal["vector_index"] = "vector_index"
    name: _ID
    store: Annotated[_SystemName, Field(min_length=1, max_length=64)] = "unknown"

    @property
    def key(self) -> str:
        return f"vector_index:{self.store}:{self.name}"


class Agent(_Entity):
    type: Literal["agent"] = "agent"
    name: _ID
    instance: _ID | None = None

    @property
    def key(self) -> str:
        return f"agent:{self.name}:{self.instance or '*'}"


class Tool(_Entity):
    type: Literal["tool"] = "tool"
    name: _ID
    agent: _ID | None = None

    @property
    def key(self) -> str:
        return f"tool:{self.agent or '*'}:{self.name}"


class Session(_Entity):
    type: Literal["session"] = "session"
    session_id: _ID

    @property
    def key(self) -> str:
        return f"session:{self.session_id}"


class User(_Entity):
    type: Literal["user"] = "user"
    user_id: _ID
    ip: str | None = Field(None, max_length=64)

    @property
    def key(self) -> str:
        return f"user:{self.user_id}"


class CloudCredential(_Entity):
    """A non-LLM credential: a cloud access key, a Vault/OpenBao token (by accessor) or lease."""

    type: Literal["cloud_credential"] = "cloud_credential"
    provider: Annotated[_SystemName, Field(min_length=1, max_length=64)] = Field(
        description="aws, vault, openbao ... (lower case)"
    )
    credential_id: _ID = Field(description="AWS access key id, Vault token accessor or lease id; never the secret")
    principal: _ID | None = Field(None, description="who the credential belongs to: IAM user, Vault entity ...")

    @property
    def key(self) -> str:
        return f"cloud_credential:{self.provider}:{self.credential_id}"


Entity = Annotated[
    LLMApiKey | Model | VectorIndex | Agent | Tool | Session | User | CloudCredential, Field(discriminator="type")
]


class Alert(BaseModel):
    """One detection, as received. ``raw`` is the payload with secrets redacted."""

    model_config = ConfigDict(extra="forbid")

    id: str
    source: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    source_id: Annotated[str, Field(min_length=1, max_length=256)]
    received_at: datetime
    occurred_at: datetime | None = Field(None, description="when the source saw it happen, if it says (time to detect)")
    title: Annotated[str, Field(min_length=1, max_length=500)]
    description: Annotated[str, Field(max_length=20_000)] = ""
    severity: Severity
    incident_type: IncidentType | None = None
    state: Literal["firing", "resolved"] = Field(
        "firing", description="resolved: the source says the condition is over (never starts a playbook)"
    )
    entities: list[Entity] = Field(default_factory=list, max_length=50)
    labels: dict[str, str] = Field(default_factory=dict)
    notes: list[str] = Field(
        default_factory=list, max_length=10, description="what the source's payload lacks or got wrong, for responders"
    )
    raw: dict[str, Any]
    raw_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    fingerprint: str = Field(description="correlation key: alerts with equal fingerprints join one incident")

    @field_validator("labels")
    @classmethod
    def _bounded_labels(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 64 or any(len(k) > 128 or len(v) > 1024 for k, v in value.items()):
            raise ValueError("labels: at most 64 labels, keys <= 128 and values <= 1024 characters")
        return value


class IncidentStatus(enum.StrEnum):
    """NIST SP 800-61r3 phases, set only from verified outcomes (aisoar.outcomes)."""

    open = "open"
    containing = "containing"
    contained = "contained"
    not_contained = "not contained"
    eradicated = "eradicated"
    recovered = "recovered"
    closed = "closed"


class TimelineEntry(BaseModel):
    at: datetime
    kind: Literal[
        "alert", "incident", "step", "request", "verify", "approval", "evidence", "notify", "run", "error", "clock"
    ]
    step_id: str | None = None
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class Incident(BaseModel):
    id: str
    title: str
    type: IncidentType | None
    severity: Severity
    status: IncidentStatus
    fingerprint: str
    created_at: datetime
    updated_at: datetime
    alert_ids: list[str] = Field(default_factory=list)
    flow_run_ids: dict[str, str] = Field(default_factory=dict, description="playbook name -> flow run id")
    timeline: list[TimelineEntry] = Field(default_factory=list)
