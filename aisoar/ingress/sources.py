"""Detection sources: who may send alerts, how each proves itself, and how its JSON is read.

One YAML file per source in the sources folder (``AISOAR_SOURCES_DIR``, default
``sources/``), validated when aisoar starts:

    name: alertmanager
    format: alertmanager          # a built-in format, or `mapping:` (the mapping language)
    auth: {scheme: bearer}        # aisoar-hmac | github-hmac | bearer | basic | header
    allow_from: [10.0.0.0/8]      # optional CIDR allowlist
    rate_limit_per_minute: 600

Secrets never live in the file: a source's secret is ``AISOAR_SOURCE_<NAME>_SECRET``, and
``AISOAR_SOURCE_<NAME>_SECRET_PREVIOUS`` keeps the old one valid during a rotation
(``<NAME>`` upper case, ``-`` as ``_``). ``AISOAR_WEBHOOK_SECRETS__<name>`` still works for a
source that signs with aisoar's own HMAC scheme; with no file, it declares a generic source.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, ValidationError, model_validator

from aisoar.config import Settings
from aisoar.ingress.auth import Credentials, Scheme
from aisoar.ingress.builtin import GENERIC, Format, formats
from aisoar.ingress.mapping import Mapping

SOURCE_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class SourceError(ValueError):
    """A source file is wrong; the message names the file and what to fix."""


class AuthSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scheme: Scheme
    username: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(None, description="basic only")
    header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")] | None = Field(None, description="header only")

    @model_validator(mode="after")
    def _complete(self) -> AuthSpec:
        if self.scheme is Scheme.basic and not self.username:
            raise ValueError("basic auth needs a username (the password is the source's secret)")
        if self.scheme is Scheme.header and not self.header:
            raise ValueError("header auth needs the header's name, e.g. header: X-Api-Key")
        return self


class SourceSpec(BaseModel):
    """One detection source, as its file declares it."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=SOURCE_NAME)]
    title: Annotated[str, Field(max_length=200)] = ""
    format: str | None = Field(None, description="a built-in format; leave out when `mapping` is given")
    mapping: Mapping | None = None
    auth: AuthSpec = Field(default_factory=lambda: AuthSpec(scheme=Scheme.aisoar_hmac))
    allow_from: list[IPvAnyNetwork] = Field(default_factory=list, description="CIDRs allowed to send; empty: any")
    rate_limit_per_minute: int = Field(600, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _one_way_to_read(self) -> SourceSpec:
        if self.format is not None and self.mapping is not None:
            raise ValueError("give either `format` (a built-in one) or `mapping`, not both")
        if self.format is not None and self.format not in formats():
            raise ValueError(f"unknown format '{self.format}'; the built-in formats are: {', '.join(formats())}")
        return self


def secret_env_names(name: str) -> tuple[str, str]:
    stem = f"AISOAR_SOURCE_{name.upper().replace('-', '_')}_SECRET"
    return stem, f"{stem}_PREVIOUS"


class RateLimit:
    """A token bucket per source: ``per_minute`` requests, refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float | None:
        """None when allowed; else the seconds to wait before the next request is."""
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return None
            return (1 - self.tokens) / self.rate


@dataclass
class Source:
    spec: SourceSpec
    format: Format
    credentials: Credentials | None  # None: its secret is not set yet
    origin: str  # the file that declares it, or the setting
    limit: RateLimit = field(init=False)  # authenticated deliveries
    failures: RateLimit = field(init=False)  # failed authentications

    def __post_init__(self) -> None:
        self.limit = RateLimit(self.spec.rate_limit_per_minute)
        self.failures = RateLimit(self.spec.rate_limit_per_minute)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def missing(self) -> str | None:
        """Why the source cannot take alerts yet, or None."""
        if self.credentials is not None:
            return None
        return f"its secret is not set: set {secret_env_names(self.name)[0]}"

    def allows(self, host: str | None) -> bool:
        if not self.spec.allow_from:
            return True
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:
            return False
        return any(address in network for network in self.spec.allow_from)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format.name,
            "auth": self.spec.auth.scheme.value,
            "ready": self.credentials is not None,
            "from": self.origin,
        }


def _secrets(settings: Settings, spec: SourceSpec) -> tuple[str, ...]:
    found: list[str] = []
    for env in secret_env_names(spec.name):
        value = settings.systems.get(env.removeprefix("AISOAR_").lower())
        if isinstance(value, str) and value:
            found.append(value)
    legacy = settings.webhook_secrets.get(spec.name)
    if legacy is not None and legacy.get_secret_value() and spec.auth.scheme is Scheme.aisoar_hmac:
        found.append(legacy.get_secret_value())
    return tuple(dict.fromkeys(found))


def _source(settings: Settings, spec: SourceSpec, origin: str) -> Source:
    if spec.mapping is not None:
        fmt = Format(spec.name, spec.mapping, title=spec.title or spec.name)
    else:
        fmt = formats()[spec.format or GENERIC]
    secrets = _secrets(settings, spec)
    credentials = (
        Credentials(spec.auth.scheme, secrets[:2], username=spec.auth.username, header=spec.auth.header)
        if secrets
        else None
    )
    return Source(spec, fmt, credentials, origin)


def read_spec(path: Path) -> SourceSpec:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SourceError(f"{path}: cannot read it as YAML: {exc}") from None
    try:
        spec = SourceSpec.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise SourceError(f"{path}: {problems}") from None
    if path.stem != spec.name:
        raise SourceError(f"{path}: the file of source '{spec.name}' must be named {spec.name}.yaml")
    return spec


def load_sources(settings: Settings) -> dict[str, Source]:
    """Every source: the files in the sources folder, then generic sources declared only by
    ``AISOAR_WEBHOOK_SECRETS__<name>``. Raises ``SourceError`` naming every wrong file."""
    sources: dict[str, Source] = {}
    problems: list[str] = []
    folder = settings.sources_dir
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []:
        try:
            spec = read_spec(path)
        except SourceError as exc:
            problems.append(str(exc))
            continue
        sources[spec.name] = _source(settings, spec, str(path))
    if problems:
        raise SourceError("\n".join(problems))
    for name in settings.webhook_secrets:
        if name not in sources:
            try:
                spec = SourceSpec(name=name, format=GENERIC)
            except ValidationError:
                raise SourceError(
                    f"AISOAR_WEBHOOK_SECRETS__{name[:64]}: a source name is lower case letters, digits, - and _"
                ) from None
            sources[name] = _source(settings, spec, f"AISOAR_WEBHOOK_SECRETS__{name}")
    return sources


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
