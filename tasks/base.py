"""What every action receives and returns."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aisoar.config import Settings
from aisoar.evidence import EvidenceStore
from aisoar.store import Store


class Outcome(enum.StrEnum):
    ok = "ok"
    skipped = "skipped"
    failed = "failed"
    planned = "planned"  # plan mode: what would have been done; nothing changed


class AssetInputs(BaseModel):
    """Inputs of an action on one asset that evidence can be collected about.

    ``asset`` names the asset the same way in the evidence collected about it and in the
    changing steps on it: the runner refuses a changing step on an asset that has no
    evidence yet (``<system>:<kind>:<id>``, e.g. ``litellm:virtual-key:<sha256>``).
    """

    model_config = ConfigDict(extra="forbid")

    @property
    def asset(self) -> str:
        raise NotImplementedError(f"{type(self).__name__} must name its asset")


class StepOutcome(BaseModel):
    status: Outcome
    summary: str
    output: dict[str, Any] = Field(default_factory=dict)


class ProbeResult(BaseModel):
    ok: bool
    detail: str


@dataclass(frozen=True)
class ActionContext:
    """Where an action runs: which incident, which step, and the services it may use."""

    incident_id: str
    playbook: str
    step_id: str
    flow_run_id: str | None
    settings: Settings
    store: Store
    evidence: EvidenceStore

    @property
    def run_url(self) -> str | None:
        if not self.flow_run_id:
            return None
        return f"{self.settings.prefect_ui_url.rstrip('/')}/runs/flow-run/{self.flow_run_id}"

    @property
    def actor(self) -> str:
        return f"aisoar:{self.playbook}/{self.step_id}"

    def keep(self, document: Any, description: str, asset: str | None = None) -> str:
        """Store ``document`` as evidence about ``asset``; returns its sha256."""
        return self.evidence.put_json(self.incident_id, document, description, self.actor, asset=asset).sha256


def ok(summary: str, **output: Any) -> StepOutcome:
    return StepOutcome(status=Outcome.ok, summary=summary, output=output)


def planned(summary: str, **output: Any) -> StepOutcome:
    return StepOutcome(status=Outcome.planned, summary=summary, output=output)


def skipped(summary: str, **output: Any) -> StepOutcome:
    return StepOutcome(status=Outcome.skipped, summary=summary, output=output)
