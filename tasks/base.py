"""What every action receives and returns."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from aisoar.config import Settings
from aisoar.evidence import EvidenceStore
from aisoar.store import Store


class Outcome(enum.StrEnum):
    ok = "ok"
    skipped = "skipped"
    failed = "failed"


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


def ok(summary: str, **output: Any) -> StepOutcome:
    return StepOutcome(status=Outcome.ok, summary=summary, output=output)


def skipped(summary: str, **output: Any) -> StepOutcome:
    return StepOutcome(status=Outcome.skipped, summary=summary, output=output)
