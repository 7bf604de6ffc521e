"""Configuration: environment variables (prefix ``AISOAR_``) and ``.env`` files.

Every external system is optional. A system's settings are ``AISOAR_<SYSTEM>_<FIELD>``,
declared with the system (``connectors/<system>.py``); a system whose settings are missing
makes its steps end "not configured"; ``aisoar up`` fills the gaps with local sandbox
stand-ins and says so.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from aisoar.models import Severity

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    return Path(os.environ.get("AISOAR_DATA_DIR", str(Path.home() / ".aisoar"))).expanduser()


def sandbox_env_file() -> Path:
    """Settings written by ``aisoar up`` for the sandbox stand-ins it started."""
    return default_data_dir() / "sandbox.env"


def sandbox_aliases_file() -> Path:
    """Which real identifier (a token accessor, an access key id) the sandbox seeded for each
    identifier the example alerts name; `aisoar fire` substitutes them."""
    return default_data_dir() / "sandbox-aliases.json"


class HttpEndpoint(BaseModel):
    """A system without a connector, reachable by the generic ``http.request`` action.

    The URL (scheme, host, port, base path) comes from configuration only; a step adds a
    relative path and a body, never a host.
    """

    url: str = Field(description="base URL, e.g. https://waf.internal.example/api")
    token: SecretStr | None = Field(None, description="sent as `<auth_scheme> <token>` in the auth header")
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AISOAR_",
        env_file=(".env",),
        env_file_encoding="utf-8",
        extra="allow",
        env_nested_delimiter="__",
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the aisoar store; default: SQLite in the data dir"
    )
    specs_dir: Path = Field(default=PROJECT_ROOT / "playbook_specs")

    # ingress
    ingress_host: str = "127.0.0.1"
    ingress_port: int = 8000
    ingress_max_body_bytes: int = 256 * 1024
    ingress_replay_window_seconds: int = 300
    webhook_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="aisoar-HMAC secret of a source, e.g. AISOAR_WEBHOOK_SECRETS__generic=...; "
        "without a file in sources/ it declares a generic source",
    )
    sources_dir: Path = Field(default=PROJECT_ROOT / "sources", description="one YAML file per detection source")
    api_token: SecretStr | None = Field(
        None, description="bearer token for the read endpoints (/alerts/{id}, /metrics); `aisoar up` makes one"
    )
    dedup_window_seconds: int = 3600
    evidence_retention_days: int = Field(
        730,
        ge=1,
        description="a closed incident's evidence files are deleted this many days after its close, "
        "unless it is on legal hold (`aisoar hold`); the custody entries and the signed manifest stay",
    )
    ingress_processes: int = Field(
        0,
        ge=0,
        le=64,
        description="processes of their own that take the webhooks (each its own interpreter: a storm's "
        "deliveries read on several cores); 0: the main process takes them",
    )
    dispatch_workers: int = Field(
        16, ge=1, le=256, description="alerts dispatched (correlated, their runs created) at once by this process"
    )
    dispatch_queue: int = Field(
        5000,
        ge=1,
        description="accepted alerts waiting for a dispatch worker; beyond it deliveries get 429 + Retry-After",
    )

    # approvals
    approvers_file: Path = Field(
        default=PROJECT_ROOT / "approvers.yaml", description="who may approve: people and the roles playbooks name"
    )
    slack_signing_secret: SecretStr | None = Field(
        None, description="the Slack app's signing secret: the Approve / Reject buttons work only with it"
    )

    # regulatory clocks
    assets_file: Path = Field(
        default=PROJECT_ROOT / "assets.yaml",
        description="what is declared about the assets (high-risk AI system, personal data, essential or "
        "financial entity): which regulatory clocks an incident starts (assets.example.yaml)",
    )
    regulatory_clock_seconds: dict[str, int] = Field(
        default_factory=dict,
        description="a deadline's duration in seconds by its key (gdpr-art33 ...), for drills; the law's otherwise",
    )
    clock_reminder_fraction: float = Field(
        0.25, gt=0, lt=1, description="a deadline is reminded when this share of its window is left"
    )

    # runner
    runner_sweep_seconds: float = Field(
        0.2, description="how often resumed approvals and runs started in the UI are picked up"
    )
    runner_stale_seconds: float = Field(
        8.0,
        description="a run (or an alert being dispatched) whose holder has not heartbeated for this long "
        "is taken over; holders heartbeat every second",
    )
    replica_id: str | None = Field(
        None,
        description="this process's name among the replicas sharing the store; stable across restarts, "
        "so that a restarted replica takes back its own runs at once (`aisoar up`/`serve`: host:port)",
    )
    runner_max_concurrent_runs: int = 32
    head_start: bool = Field(
        True,
        description="a playbook's leading evidence and reversible containment run as soon as its incident is "
        "claimed, before its Prefect run is created (the run then records them)",
    )
    step_retry_delays: list[float] = Field(
        default_factory=lambda: [5.0, 10.0, 20.0, 40.0, 60.0, 60.0],
        description="seconds between the tries of a step whose target is unreachable or answers 429/5xx "
        "(3 min 15 s in all by default, enough to ride out a restart of the target)",
    )
    page_min_severity: Severity = Field(
        Severity.high, description="a new incident at least this severe pages on-call (where PagerDuty is configured)"
    )

    # the Prefect UI, for links in Slack / Jira / reports
    prefect_ui_url: str = "http://127.0.0.1:4200"

    # External systems: every ``AISOAR_<SYSTEM>_<FIELD>`` value is kept as it is (``systems``) and
    # read by that system's declaration (connectors/<system>.py), which validates it.
    http_endpoints: dict[str, HttpEndpoint] = Field(
        default_factory=dict, description="named endpoints for http.request, e.g. AISOAR_HTTP_ENDPOINTS__waf__URL=..."
    )
    http_timeout_seconds: float = 10.0
    plan_mode: bool = Field(False, description="every connector describes the changes it would make and makes none")

    sandbox: bool = Field(False, description="set by `aisoar up` when it runs local stand-ins")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _SystemEnv(settings_cls), dotenv_settings, file_secret_settings

    @property
    def systems(self) -> dict[str, Any]:
        """The external systems' raw settings, ``<system>_<field>`` -> value (environment first,
        then the .env files)."""
        return {key.lower(): value for key, value in (self.model_extra or {}).items()}

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'aisoar.db'}"

    @property
    def evidence_dir(self) -> Path:
        return self.data_dir / "evidence"


class _SystemEnv(PydanticBaseSettingsSource):
    """Environment variables ``AISOAR_*`` that are no core setting: the systems' settings.
    (pydantic-settings reads only declared fields from the environment.)"""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        core = set(self.settings_cls.model_fields)
        found: dict[str, Any] = {}
        for key, value in os.environ.items():
            if not key.upper().startswith("AISOAR_"):
                continue
            name = key[len("AISOAR_") :].lower()
            if "__" in name or name in core:  # a nested core setting, or a core setting
                continue
            found[name] = value
        return found


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    env_files: list[Path] = [Path(".env")]
    sandbox = sandbox_env_file()
    if sandbox.exists():
        env_files.insert(0, sandbox)
    return Settings(_env_file=tuple(env_files))


def reset_settings() -> None:
    get_settings.cache_clear()
