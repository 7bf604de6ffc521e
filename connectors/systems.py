"""Every external system aisoar has a connector for: one declaration each (``SYSTEM`` at the
end of ``connectors/<name>.py``). Adding a system is its module and one line here."""

from __future__ import annotations

from typing import Any

from connectors import (
    agent,
    anthropic,
    aws,
    chroma,
    jira,
    lancedb,
    litellm,
    mlflow,
    openai,
    pagerduty,
    qdrant,
    slack,
    vault,
)
from connectors.system import System

SYSTEMS: tuple[System[Any, Any], ...] = (
    litellm.SYSTEM,
    openai.SYSTEM,
    anthropic.SYSTEM,
    slack.SYSTEM,
    jira.SYSTEM,
    pagerduty.SYSTEM,
    vault.SYSTEM,
    agent.SYSTEM,
    aws.SYSTEM,
    mlflow.SYSTEM,
    chroma.SYSTEM,
    lancedb.SYSTEM,
    qdrant.SYSTEM,
)
BY_NAME: dict[str, System[Any, Any]] = {system.name: system for system in SYSTEMS}
