"""What the core knows about an action: its declaration, not its implementation.

Implementations live in ``tasks/`` and register themselves with these declarations; the
spec validator and the runner's guards read only this.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel


class Effect(enum.StrEnum):
    read_only = "read_only"  # reads only (evidence into aisoar's own store counts as reading)
    notifies = "notifies"  # writes to people's systems (Slack, Jira, PagerDuty, the report), not to the affected one
    changing = "changing"  # reversible: declares its inverse
    destructive = "destructive"  # irreversible: needs an approval gate


@dataclass(frozen=True)
class ActionInfo:
    name: str
    effect: Effect
    inputs: type[BaseModel]
    summary: str
    collects_evidence: bool = False
    inverse: str | None = None
    has_probe: bool = False
    ends_playbook: bool = False

    @property
    def changes_things(self) -> bool:
        """Changes an affected system: evidence first, verified by its probe."""
        return self.effect in (Effect.changing, Effect.destructive)

    @property
    def writes(self) -> bool:
        """Writes anywhere outside aisoar (a change or a notification): its probe checks the write."""
        return self.effect is not Effect.read_only


ActionCatalog = Mapping[str, ActionInfo]
