"""Regulatory clocks: which notification deadlines an incident starts, from its type and the
declared context of the assets it names (``assets.yaml``), counted from the time of awareness
(the incident's first alert).

The regimes and their durations come from public summaries of the texts; counsel must confirm
them for the organisation (docs/playbooks.md says so). They are data here, so a reviewed change
is one line:

* EU AI Act Art. 73, a serious incident of a high-risk AI system: report within 15 days (2 days
  for a system in critical infrastructure or a widespread infringement). Until the authorities
  are informed, the system must not be altered in a way that affects the later evaluation of
  causes: its state is kept as evidence before any change (the runner's evidence-first rule).
* GDPR Art. 33, a personal data breach: notify the supervisory authority within 72 h.
* NIS2 Art. 23, a significant incident of an essential or important entity: early warning 24 h,
  notification 72 h, final report 1 month.
* DORA, a major ICT-related incident of a financial entity: initial notification 4 h (at most
  24 h after awareness), intermediate report 72 h, final report 1 month.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aisoar.models import Alert, Severity
from aisoar.taxonomy import IncidentType

HOUR = 3600
DAY = 24 * HOUR


class Context(BaseModel):
    """What is declared about an asset (or the organisation): which rules reach it."""

    model_config = ConfigDict(extra="forbid")
    high_risk_ai: bool | None = Field(None, description="a high-risk AI system under the EU AI Act")
    critical_infrastructure: bool | None = Field(None, description="used in critical infrastructure (AI Act: 2 days)")
    personal_data: bool | None = Field(None, description="processes personal data (GDPR)")
    essential_entity: bool | None = Field(None, description="operated by an essential or important entity (NIS2)")
    financial_entity: bool | None = Field(None, description="operated by a financial entity (DORA)")


class Asset(Context):
    name: str = Field(min_length=1, max_length=200)
    refs: list[str] = Field(
        min_length=1, description="what alerts name it by: agent:<name>, model:<name>, vector_index:<name>, tool:<name>"
    )


class AssetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    organisation: Context = Field(default_factory=Context)
    assets: list[Asset] = Field(default_factory=list)


class AssetsError(ValueError):
    pass


def load_assets(path: Path) -> AssetsFile:
    """The declared context; an absent file declares nothing (every clock then depends on the
    incident type alone)."""
    if not path.is_file():
        return AssetsFile()
    try:
        return AssetsFile.model_validate(yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise AssetsError(f"{path}: {exc}") from None


def entity_refs(alerts: list[Alert]) -> set[str]:
    """What the incident's alerts name, as ``<type>:<name>``."""
    refs: set[str] = set()
    for alert in alerts:
        for entity in alert.entities:
            name = getattr(entity, "name", None) or getattr(entity, "principal", None)
            if name:
                refs.add(f"{entity.type}:{name}")
    return refs


@dataclass(frozen=True)
class Deadline:
    key: str  # e.g. gdpr-art33
    regime: str  # e.g. GDPR Art. 33
    what: str  # the duty: "notify the supervisory authority"
    seconds: int
    why: str  # which declaration or type started it

    def due(self, aware: datetime, overrides: dict[str, int]) -> datetime:
        return aware + timedelta(seconds=overrides.get(self.key, self.seconds))


PERSONAL_DATA_TYPES = {
    IncidentType.data_leakage,
    IncidentType.model_inversion,
    IncidentType.unauthorized_access,
    IncidentType.data_integrity_violation,
    IncidentType.rogue_agent,
}
ALWAYS_PERSONAL = {IncidentType.data_leakage, IncidentType.model_inversion}  # unless declared otherwise
SIGNIFICANT = {Severity.high, Severity.critical}


def _declared(assets: AssetsFile, refs: set[str], flag: str) -> tuple[bool | None, str]:
    """Whether any named asset (else the organisation) declares ``flag``, and which."""
    named = [asset for asset in assets.assets if refs & set(asset.refs)]
    for asset in named:
        if getattr(asset, flag) is True:
            return True, f"asset {asset.name} is declared {flag.replace('_', ' ')}"
    if any(getattr(asset, flag) is False for asset in named):
        return False, ""
    if getattr(assets.organisation, flag) is True:
        return True, f"the organisation is declared {flag.replace('_', ' ')}"
    return getattr(assets.organisation, flag), ""


def deadlines_for(
    incident_type: IncidentType | None, severity: Severity, refs: set[str], assets: AssetsFile
) -> list[Deadline]:
    """The deadlines an incident starts, each saying why."""
    found: list[Deadline] = []
    high_risk, why = _declared(assets, refs, "high_risk_ai")
    if high_risk and incident_type is not IncidentType.bias:
        critical, critical_why = _declared(assets, refs, "critical_infrastructure")
        seconds, because = (2 * DAY, f"{why}; {critical_why}") if critical else (15 * DAY, why)
        found.append(
            Deadline(
                "ai-act-art73",
                "EU AI Act Art. 73",
                "report the serious incident to the market surveillance authority (do not alter the system before: "
                "its state is kept as evidence first)",
                seconds,
                because,
            )
        )
    personal, why = _declared(assets, refs, "personal_data")
    if incident_type in PERSONAL_DATA_TYPES and (personal or (personal is None and incident_type in ALWAYS_PERSONAL)):
        because = (
            why or f"a {incident_type.value.replace('_', ' ')} may involve personal data (nothing declares otherwise)"
        )
        found.append(
            Deadline(
                "gdpr-art33",
                "GDPR Art. 33",
                "notify the supervisory authority of the personal data breach",
                72 * HOUR,
                because,
            )
        )
    essential, why = _declared(assets, refs, "essential_entity")
    if essential and severity in SIGNIFICANT:
        because = f"{why}; severity {severity.value}"
        found += [
            Deadline("nis2-early-warning", "NIS2 Art. 23", "send the CSIRT an early warning", 24 * HOUR, because),
            Deadline("nis2-notification", "NIS2 Art. 23", "send the incident notification", 72 * HOUR, because),
            Deadline("nis2-final-report", "NIS2 Art. 23", "send the final report", 30 * DAY, because),
        ]
    financial, why = _declared(assets, refs, "financial_entity")
    if financial and severity in SIGNIFICANT:
        because = f"{why}; severity {severity.value}"
        found += [
            Deadline("dora-initial", "DORA", "send the initial notification (major ICT incident)", 4 * HOUR, because),
            Deadline("dora-intermediate", "DORA", "send the intermediate report", 72 * HOUR, because),
            Deadline("dora-final", "DORA", "send the final report", 30 * DAY, because),
        ]
    return found


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds > 3 * DAY and seconds % DAY == 0:  # up to 72 h, in hours (as the texts count them)
        return f"{seconds // DAY} d"
    if seconds >= HOUR and seconds % HOUR == 0:
        return f"{seconds // HOUR} h"
    if seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def as_dict(deadline: Deadline) -> dict[str, Any]:
    return {"key": deadline.key, "regime": deadline.regime, "what": deadline.what, "why": deadline.why}
