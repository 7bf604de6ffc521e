"""Every connector aisoar has, from the systems' declarations: its settings, whether it is
configured, the actions that use it, and a reachability check (``aisoar connectors [--check]``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

from aisoar.config import Settings
from connectors.errors import ConnectorError, NotConfigured
from connectors.http import endpoint
from connectors.system import Checkable
from connectors.systems import SYSTEMS
from tasks.registry import REGISTRY


@dataclass(frozen=True)
class ConnectorStatus:
    name: str
    system: str
    configured: bool
    detail: str
    actions: tuple[str, ...]
    reachable: bool | None = None  # None: not checked


def _actions(namespace: str) -> tuple[str, ...]:
    return tuple(sorted(name for name in REGISTRY if name.split(".", 1)[0] == namespace))


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
    for system in SYSTEMS:
        yield _status(system.name, system.title, partial(system.client, settings), _actions(system.name), check)
    http_actions = _actions("http")
    for name in sorted(settings.http_endpoints):
        yield _status(f"http:{name}", f"HTTP endpoint {name}", partial(endpoint, settings, name), http_actions, check)
