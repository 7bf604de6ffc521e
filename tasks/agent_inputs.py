"""The inputs of the ``agent.*`` actions, and the rules that keep alert text out of URLs.

Every value can come from alert text, which is attacker-controlled: each is checked against a
strict pattern before it reaches a URL, and an IP block on a non-public, loopback or very broad
range is refused unless the playbook itself allows private ranges.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from tasks.base import AssetInputs

NAME = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$"
GuardrailMode = Literal["standard", "strict", "lockdown"]
STRICTNESS: dict[str, int] = {"standard": 0, "strict": 1, "lockdown": 2}
MAX_PURGE_IDS = 1000
NARROWEST_BROAD_PREFIX = {4: 16, 6: 48}  # refuse IP blocks broader than /16 (IPv4) or /48 (IPv6)

AgentName = Annotated[str, Field(pattern=NAME, description="the agent's name at the runtime")]
ToolName = Annotated[str, Field(pattern=NAME, description="the tool's name (MCP tool or function)")]
InstanceId = Annotated[str, Field(pattern=NAME, description="one running instance of the agent")]
MemoryId = Annotated[str, Field(pattern=NAME)]
SessionId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,255}$")]
UserId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+\-]{0,127}$")]


def canonical_ip(value: str) -> str:
    """An IP address or CIDR network in canonical form; a single address is written bare."""
    try:
        network = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"not an IP address or CIDR network: {exc}") from None
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def refuse_unsafe_ip(value: str, allow_private: bool) -> None:
    """Blocking these would cut off the runtime's own traffic (or everyone): refuse them."""
    network = ipaddress.ip_network(value)
    if network.is_loopback or network.is_unspecified or network.is_link_local or network.is_multicast:
        raise ValueError(f"{value} is a loopback, unspecified, link-local or multicast range: never blocked")
    if network.prefixlen < NARROWEST_BROAD_PREFIX[network.version]:
        raise ValueError(
            f"{value} is broader than /{NARROWEST_BROAD_PREFIX[network.version]}: refused (it would block too many)"
        )
    if not network.is_global and not allow_private:
        raise ValueError(
            f"{value} is not a public address (private, reserved or shared range): refused unless the playbook "
            "sets allow_private: true (a private address is often the runtime's own proxy or load balancer)"
        )


IpValue = Annotated[str, Field(min_length=2, max_length=64), AfterValidator(canonical_ip)]


def _split_ids(value: Any) -> Any:
    """A list of ids, or one string of ids separated by commas or spaces (from an alert label)."""
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    return value


class AgentInputs(AssetInputs):
    agent: AgentName

    @property
    def asset(self) -> str:
        return f"agent:{self.agent}"


def _blank_is_none(value: Any) -> Any:
    """An optional input rendered from a template that found nothing is an empty string."""
    return None if isinstance(value, str) and not value.strip() else value


class AgentEvidenceInputs(AgentInputs):
    session: Annotated[SessionId | None, BeforeValidator(_blank_is_none)] = Field(
        None, description="also preserve this session's record"
    )
    since: datetime | None = Field(None, description="tool calls since (default: the whole log the runtime keeps)")


class ToolInputs(AgentInputs):
    tool: ToolName


class InstanceInputs(AgentInputs):
    instance: InstanceId


class PurgeInputs(AgentInputs):
    ids: Annotated[
        list[MemoryId] | None, BeforeValidator(_split_ids), Field(min_length=1, max_length=MAX_PURGE_IDS)
    ] = None
    all: bool = Field(False, description="purge every memory item (instead of ids)")

    @model_validator(mode="after")
    def _one_of(self) -> PurgeInputs:
        if (self.ids is None) == (not self.all):
            raise ValueError("give either ids or all: true (not both, not neither)")
        return self


class ResetInputs(AgentInputs):
    baseline: Annotated[str, Field(pattern=NAME)] = "default"


class GuardrailInputs(AgentInputs):
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="at most this temperature")
    guardrail_mode: GuardrailMode | None = Field("strict", description="at least this strict")

    @model_validator(mode="after")
    def _something(self) -> GuardrailInputs:
        if self.temperature is None and self.guardrail_mode is None:
            raise ValueError("give temperature, guardrail_mode or both")
        return self


class RestoreGuardrailInputs(AgentInputs):
    temperature: float = Field(ge=0.0, le=2.0)
    guardrail_mode: GuardrailMode


class SessionInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session: SessionId


class UserInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: UserId
    expires_at: datetime | None = Field(None, description="the block lifts itself then (default: never)")


class UnblockUserInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: UserId


class IpInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ip: IpValue
    allow_private: bool = Field(False, description="allow private/reserved ranges (set in the playbook, not the alert)")
    expires_at: datetime | None = None

    @model_validator(mode="after")
    def _safe(self) -> IpInputs:
        refuse_unsafe_ip(self.ip, self.allow_private)
        return self


class UnblockIpInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ip: IpValue


class SubjectInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["user", "ip"]
    value: Annotated[str, Field(min_length=1, max_length=128)]

    @model_validator(mode="after")
    def _valid_value(self) -> SubjectInputs:
        if self.kind == "ip":
            self.value = canonical_ip(self.value)
        else:
            self.value = UserInputs(user=self.value).user
        return self


class RateLimitInputs(SubjectInputs):
    requests_per_minute: int = Field(ge=1, le=1_000_000)
    allow_private: bool = False
    expires_at: datetime | None = None

    @model_validator(mode="after")
    def _safe(self) -> RateLimitInputs:
        if self.kind == "ip":
            refuse_unsafe_ip(self.value, self.allow_private)
        return self
