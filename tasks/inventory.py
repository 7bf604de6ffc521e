"""Every connector aisoar has: its settings, whether it is configured, the actions that use
it, and a reachability check (``aisoar connectors [--check]``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from aisoar.config import Settings
from connectors.errors import ConnectorError, NotConfigured
from tasks import connect
from tasks.http_action import endpoint
from tasks.registry import REGISTRY


class Checkable(Protocol):
    def check(self) -> str: ...


@dataclass(frozen=True)
class ConnectorEntry:
    name: str
    system: str
    settings: tuple[str, ...]
    build: Callable[[Settings], Checkable]
    action_prefixes: tuple[str, ...]
    stand_in: str = field(default="")  # what tests and `make up` use when the real system cannot run locally


@dataclass(frozen=True)
class ConnectorStatus:
    name: str
    system: str
    configured: bool
    detail: str
    actions: tuple[str, ...]
    reachable: bool | None = None  # None: not checked


CONNECTORS: tuple[ConnectorEntry, ...] = (
    ConnectorEntry(
        "litellm",
        "LiteLLM gateway",
        ("AISOAR_LITELLM_URL", "AISOAR_LITELLM_MASTER_KEY"),
        connect.gateway,
        ("gateway.",),
        "sandbox fake checked against the proxy's OpenAPI document",
    ),
    ConnectorEntry(
        "openai",
        "OpenAI Admin API",
        ("AISOAR_OPENAI_ADMIN_URL", "AISOAR_OPENAI_ADMIN_KEY"),
        connect.openai_admin,
        ("openai.",),
        "sandbox fake driven by the official openai SDK",
    ),
    ConnectorEntry(
        "slack",
        "Slack",
        ("AISOAR_SLACK_TOKEN", "AISOAR_SLACK_CHANNEL"),
        connect.slack,
        ("slack.",),
        "sandbox fake driven by slack-sdk",
    ),
    ConnectorEntry(
        "jira",
        "Jira",
        ("AISOAR_JIRA_URL", "AISOAR_JIRA_USER", "AISOAR_JIRA_TOKEN", "AISOAR_JIRA_PROJECT"),
        connect.jira,
        ("jira.",),
        "sandbox fake driven by the jira package",
    ),
    ConnectorEntry(
        "pagerduty",
        "PagerDuty Events API v2",
        ("AISOAR_PAGERDUTY_ROUTING_KEY",),
        connect.pagerduty,
        ("pagerduty.",),
        "sandbox fake",
    ),
    ConnectorEntry(
        "anthropic",
        "Anthropic Admin API",
        ("AISOAR_ANTHROPIC_ADMIN_KEY",),
        connect.anthropic_admin,
        ("anthropic.",),
        "sandbox fake",
    ),
    ConnectorEntry(
        "vault",
        "OpenBao / HashiCorp Vault",
        ("AISOAR_VAULT_URL", "AISOAR_VAULT_TOKEN"),
        connect.vault,
        ("vault.",),
    ),
    ConnectorEntry(
        "agents",
        "Agent control plane",
        ("AISOAR_AGENT_CONTROL_URL", "AISOAR_AGENT_CONTROL_TOKEN"),
        connect.agent_control,
        ("agent.",),
        "sandbox agent runtime that enforces the contract",
    ),
    ConnectorEntry(
        "aws",
        "AWS IAM",
        ("AISOAR_AWS_ACCESS_KEY_ID", "AISOAR_AWS_SECRET_ACCESS_KEY"),
        connect.aws_iam,
        ("aws.",),
    ),
    ConnectorEntry(
        "mlflow",
        "MLflow model registry",
        ("AISOAR_MLFLOW_URL",),
        connect.mlflow,
        ("mlflow.",),
    ),
    ConnectorEntry(
        "chroma",
        "Chroma",
        ("AISOAR_CHROMA_URL",),
        connect.chroma,
        ("chroma.",),
    ),
    ConnectorEntry(
        "lancedb",
        "LanceDB",
        ("AISOAR_LANCEDB_URI",),
        connect.lancedb,
        ("lancedb.",),
    ),
    ConnectorEntry(
        "qdrant",
        "Qdrant",
        ("AISOAR_QDRANT_URL", "AISOAR_QDRANT_API_KEY"),
        connect.qdrant,
        ("qdrant.",),
        "sandbox fake modeled on Qdrant's REST API",
    ),
)


def _actions(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(name for name in REGISTRY if name.startswith(prefixes)))


def _status(
    name: str, system: str, build: Callable[[], Checkable], actions: tuple[str, ...], check: bool
) -> ConnectorStatus:
    try:
        connector = build()
    except NotConfigured as exc:
        return ConnectorStatus(name, system, False, f"not configured: set {', '.join(exc.settings)}", actions)
    if not check:
        return ConnectorStatus(name, system, True, "configured", actions)
    try:
        detail = connector.check()
    except ConnectorError as exc:
        return ConnectorStatus(name, system, True, str(exc), actions, reachable=False)
    except Exception as exc:  # a check reports every failure; it never raises
        return ConnectorStatus(name, system, True, f"{system}: {type(exc).__name__}: {exc}", actions, reachable=False)
    return ConnectorStatus(name, system, True, detail, actions, reachable=True)


def statuses(settings: Settings, check: bool = False) -> Iterator[ConnectorStatus]:
    """Each connector's status; with ``check``, after one authenticated read against it."""
    for entry in CONNECTORS:
        yield _status(entry.name, entry.system, partial(entry.build, settings), _actions(entry.action_prefixes), check)
    http_actions = _actions(("http.",))
    for name in sorted(settings.http_endpoints):
        yield _status(f"http:{name}", f"HTTP endpoint {name}", partial(endpoint, settings, name), http_actions, check)
