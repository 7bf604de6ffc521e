"""What every action receives and returns."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aisoar.case import CaseLinks, run_url
from aisoar.config import Settings
from aisoar.evidence import EvidenceStore
from aisoar.models import Incident
from aisoar.specs import PlaybookSpec
from aisoar.store import Store


class Outcome(enum.StrEnum):
    """How a step ended: exactly one of these, each with its own name in the UI and the report."""

    ok = "ok"  # done; a change is done *and verified* at the target by its probe
    skipped = "skipped"  # skipped by its condition
    not_configured = "not_configured"  # the system it needs has no settings
    absent = "absent"  # the target, proven to be the right system, says the asset does not exist
    refused = "refused"  # a runner rule refused it (no evidence first, no approval gate, ...)
    failed = "failed"  # it was tried and did not work (or could not be verified)
    rejected = "rejected"  # its approval was rejected (or the run was cancelled while it waited)
    expired = "expired"  # its approval expired unanswered and the default was to reject
    planned = "planned"  # plan mode: what would have been done; nothing changed

    @property
    def label(self) -> str:
        """The name a responder reads: the task run's state name, the report, Slack."""
        return OUTCOME_LABELS[self]

    @property
    def final(self) -> bool:
        """A final outcome is not tried again when the run runs again (after a resume, a new
        alert or a restart); the others are."""
        return self in {Outcome.ok, Outcome.skipped, Outcome.rejected, Outcome.expired, Outcome.planned}


LINK_KINDS = ("notify",)  # the timeline entries that hold an incident's Slack thread and Jira issue

OUTCOME_LABELS = {
    Outcome.ok: "Done",
    Outcome.skipped: "Skipped",
    Outcome.not_configured: "Not configured",
    Outcome.absent: "No such asset",
    Outcome.refused: "Refused",
    Outcome.failed: "Failed",
    Outcome.rejected: "Rejected",
    Outcome.expired: "Expired",
    Outcome.planned: "Planned",
}


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
    spec: PlaybookSpec | None = None  # the playbook the step belongs to (its objectives decide a close)

    @property
    def run_url(self) -> str | None:
        if not self.flow_run_id:
            return None
        return run_url(self.settings.prefect_ui_url, self.flow_run_id)

    def links(self, incident: Incident | None = None) -> CaseLinks:
        """The incident's case links (Slack thread, Jira issue, report, this run)."""
        incident = incident or self.store.get_incident(self.incident_id, kinds=LINK_KINDS)
        return CaseLinks.of(incident, self.settings.prefect_ui_url, self.flow_run_id)

    @property
    def actor(self) -> str:
        return f"aisoar:{self.playbook}/{self.step_id}"

    def keep(self, document: Any, description: str, asset: str | None = None) -> str:
        """Store ``document`` as evidence about ``asset``; returns its sha256."""
        return self.keep_all([(document, description, asset)])[0]

    def keep_all(self, documents: Sequence[tuple[Any, str, str | None]]) -> list[str]:
        """Store several documents (document, description, asset) as evidence, their custody
        entries in one transaction; their sha256s, in order."""
        kept = self.evidence.put_json_many(self.incident_id, documents, self.actor, self.flow_run_id)
        return [record.sha256 for record in kept]


def ok(summary: str, **output: Any) -> StepOutcome:
    return StepOutcome(status=Outcome.ok, summary=summary, output=output)


def planned(summary: str, **output: Any) -> StepOutcome:
    return StepOutcome(status=Outcome.planned, summary=summary, output=output)


def skipped(summary: str, **output: Any) -> StepOutcome:
    return StepOutcome(status=Outcome.skipped, summary=summary, output=output)


def refused(summary: str, **output: Any) -> StepOutcome:
    """A rule refused the change (the action's own safety rule, or the runner's)."""
    return StepOutcome(status=Outcome.refused, summary=summary, output=output)


def absent(summary: str, **output: Any) -> StepOutcome:
    """The target says the asset does not exist. Only for an answer from a connector that has
    proven it talks to the right system (``HttpApi`` checks that before it accepts a 404)."""
    return StepOutcome(status=Outcome.absent, summary=summary, output=output)
