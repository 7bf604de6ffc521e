"""The declaration of one external system: everything aisoar knows about it, in one place.

A system has one name, used everywhere: its connector module (``connectors/<name>.py``), its
action namespace and tasks module (``<name>.*`` in ``tasks/<name>.py``), its settings
(``AISOAR_<NAME>_<FIELD>``), its sandbox stand-in and its section of the docs. From the
declaration come the settings lookup, the "not configured" message, ``aisoar connectors``,
the stand-ins ``aisoar up`` starts and the conformance tests every connector passes.
"""

from __future__ import annotations

import enum
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from aisoar.config import Settings
from connectors.errors import NotConfigured

log = logging.getLogger("aisoar.connectors")


class Checkable(Protocol):
    def check(self) -> str:
        """One cheap authenticated read; returns what it saw, raises ``ConnectorError``."""
        ...


class SystemSettings(BaseModel):
    """The settings of one system: field ``url`` is read from ``AISOAR_<NAME>_URL``."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StandIn(enum.StrEnum):
    """What runs in the sandbox (``aisoar up``) and in the tests when the real system cannot."""

    fake = "fake"  # a faithful fake of the SaaS API (sandbox/<name>.py)
    server = "server"  # the real server, started locally (sandbox/real_servers.py)
    embedded = "embedded"  # a library on local files: nothing to start


@dataclass(frozen=True)
class ConnectOptions:
    """How a connector is built, beyond the system's own settings."""

    timeout: float = 10.0
    plan: bool = False
    retry: Mapping[str, Any] = field(default_factory=dict)  # attempts, backoff, max_backoff (tests)

    def key(self) -> tuple[Any, ...]:
        return (self.timeout, self.plan, tuple(sorted(self.retry.items())))


S = TypeVar("S", bound=SystemSettings)
C = TypeVar("C", bound=Checkable)


@dataclass(frozen=True, eq=False)
class System(Generic[S, C]):
    name: str  # one name: connector module, action namespace, settings prefix, stand-in
    title: str  # how errors, the inventory and the docs call it
    settings: type[S]
    required: tuple[str, ...]  # the fields that must be set; more rules in ``missing``
    build: Callable[[S, ConnectOptions], C]
    stand_in: StandIn
    url_field: str | None = "url"  # the base URL's field (None: no HTTP), where tests put a proxy
    example_change: Callable[[C], object] | None = None  # a harmless change, to prove plan mode
    example_setup: Callable[[C], object] | None = None  # makes what the example change acts on (not planned)
    renamed: Mapping[str, str] = field(default_factory=dict)  # an old field name -> its name now
    missing_rule: Callable[[S], list[str]] | None = None  # other ways to be configured (AWS's default chain)
    _cache: dict[tuple[Any, ...], C] = field(default_factory=dict, repr=False)
    _warned: set[str] = field(default_factory=set, repr=False)  # old names already warned about
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def env(self, name: str) -> str:
        """The environment variable of field ``name``."""
        return f"AISOAR_{self.name.upper()}_{name.upper()}"

    def env_of(self, values: Mapping[str, str]) -> dict[str, str]:
        """Field values as the environment variables that set them (what `aisoar up` writes)."""
        unknown = set(values) - set(self.settings.model_fields)
        if unknown:
            raise ValueError(f"{self.name}: no such setting(s) {sorted(unknown)}")
        return {self.env(key): value for key, value in values.items()}

    def section(self, raw: Mapping[str, Any]) -> S:
        """The system's settings from the raw ``<name>_<field>`` values; invalid values raise
        ``NotConfigured`` naming the variable."""
        prefix = f"{self.name}_"
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if not key.startswith(prefix) or value is None:
                continue
            name = key.removeprefix(prefix)
            if name in self.renamed:
                if name not in self._warned:  # once per process, not on every step
                    self._warned.add(name)
                    log.warning("%s is the old name of %s: rename it", self.env(name), self.env(self.renamed[name]))
                name = self.renamed[name]
            if name in self.settings.model_fields:
                values.setdefault(name, value)
        try:
            return self.settings.model_validate(values)
        except ValidationError as exc:
            problems = [f"{self.env(str(e['loc'][0]))}: {e['msg']}" for e in exc.errors() if e["loc"]]
            raise NotConfigured(self.title, problems or [str(exc)]) from exc

    def missing(self, section: S) -> list[str]:
        """The settings still to set; empty when the system is configured."""
        absent = [self.env(name) for name in self.required if getattr(section, name) in (None, "")]
        if absent and self.missing_rule is not None:
            return self.missing_rule(section)
        return absent

    def secrets(self, section: S) -> list[str]:
        """The secret values of a section (what must never be printed or logged)."""
        return [
            value.get_secret_value()
            for value in (getattr(section, name) for name in type(section).model_fields)
            if isinstance(value, SecretStr) and value.get_secret_value()
        ]

    def client(self, settings: Settings) -> C:
        """The connector for ``settings``; raises ``NotConfigured`` naming what to set."""
        return self.connect(settings.systems, ConnectOptions(settings.http_timeout_seconds, settings.plan_mode))

    def settings_of(self, settings: Settings) -> S:
        return self.section(settings.systems)

    def configured(self, settings: Settings) -> bool:
        try:
            return not self.missing(self.section(settings.systems))
        except NotConfigured:
            return False

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def connect(self, raw: Mapping[str, Any], options: ConnectOptions) -> C:
        """The connector, built once per configuration (a client costs tens of milliseconds:
        TLS context, certificate store) and shared by the runs of a process."""
        section = self.section(raw)
        missing = self.missing(section)
        if missing:
            raise NotConfigured(self.title, missing)
        key = (json.dumps(_plain(section), sort_keys=True, default=str), *options.key())
        with self._lock:
            connector = self._cache.get(key)
            if connector is None:
                connector = self._cache[key] = self.build(section, options)
            return connector


def _plain(section: BaseModel) -> dict[str, Any]:
    return {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in ((name, getattr(section, name)) for name in type(section).model_fields)
    }


def secret(value: SecretStr | None) -> str:
    """A required secret's value (``missing`` has made sure it is set)."""
    if value is None:
        raise ValueError("a required secret is missing")
    return value.get_secret_value()


def optional_secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
