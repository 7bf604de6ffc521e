"""Shared fixtures: one real Prefect server per test session, the sandbox stand-ins,
and settings that point at them. Everything listens on free loopback ports."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Prefect reads its settings when it is first imported: point it at this session's
# server before anything imports it.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="aisoar-tests-"))
from cli.prefect_auth import credential  # noqa: E402
from sandbox.serving import free_port  # noqa: E402

_PREFECT_PORT = free_port()
# The session's Prefect server is locked as `aisoar up` locks its own; every client sends this.
PREFECT_AUTH = credential(_SESSION_DIR).auth_string
os.environ.pop("PREFECT_API_KEY", None)
os.environ.update(
    {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_HOME": str(_SESSION_DIR / "prefect-client"),
        "PREFECT_API_URL": f"http://127.0.0.1:{_PREFECT_PORT}/api",
        "PREFECT_API_AUTH_STRING": PREFECT_AUTH,
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_TO_API_ENABLED": "true",
    }
)

import pytest  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402

# Property tests draw the same examples on every run (a red suite is a real regression, not
# luck); `pytest --hypothesis-profile=explore` draws new ones to look for more.
hypothesis_settings.register_profile("default", derandomize=True, database=None)
hypothesis_settings.register_profile("explore", derandomize=False, database=None)
hypothesis_settings.load_profile("default")

from aisoar.config import Settings  # noqa: E402
from aisoar.store import Store  # noqa: E402
from cli.prefect_server import PrefectServer  # noqa: E402
from sandbox.stack import Sandbox  # noqa: E402

WEBHOOK_SECRET = "test-webhook-secret-0123456789"
API_TOKEN = "test-api-token-0123456789"
READ = {"Authorization": f"Bearer {API_TOKEN}"}  # what a reader of /alerts and /metrics sends
SANDBOX_APPROVERS = Path(__file__).resolve().parent.parent / "sandbox" / "approvers.yaml"

# Session fixtures that start the real servers (OpenBao, moto, MLflow, Chroma, PostgreSQL) on demand.
pytest_plugins = [
    "tests.servers.openbao",
    "tests.servers.moto",
    "tests.servers.mlflow",
    "tests.servers.chroma",
    "tests.servers.postgres",
]


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[PrefectServer]:
    server = PrefectServer(_SESSION_DIR / "prefect-server", auth_string=PREFECT_AUTH, port=_PREFECT_PORT).start()
    yield server
    server.stop()


@pytest.fixture()
def sandbox() -> Iterator[Sandbox]:
    stack = Sandbox.create()
    stack.seed_demo()
    yield stack
    stack.stop()


@pytest.fixture()
def stack_for(prefect_server: PrefectServer, sandbox: Sandbox, tmp_path: Path) -> Iterator[Any]:
    """Starts the stack (ingress, runtime) with the stand-ins of the given connectors, Slack and
    Jira: ``stack_for(("agent", "litellm"), **settings)``; stopped after the test."""
    from tests.stack import Stack, start_stack

    started: list[Stack] = []

    def start(connectors: tuple[str, ...], **overrides: object) -> Stack:
        stack = start_stack(sandbox, tmp_path / "data", (*connectors, "slack", "jira"), **overrides)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()


@pytest.fixture()
def stack(prefect_server: PrefectServer, sandbox: Sandbox, tmp_path: Path) -> Iterator[object]:
    """Ingress and runtime in this process, every connector on its sandbox stand-in."""
    from tests.stack import start_stack

    started = start_stack(sandbox, tmp_path / "data")
    yield started
    started.stop()


def make_settings(data_dir: Path, env: dict[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from explicit values only (no environment, no .env)."""
    values: dict[str, object] = {
        "data_dir": data_dir,
        "webhook_secrets": {"generic": WEBHOOK_SECRET},
        "api_token": API_TOKEN,
        "runner_sweep_seconds": 0.25,
        "prefect_ui_url": "http://127.0.0.1:4200",
        "approvers_file": SANDBOX_APPROVERS,
        # Steps retried after a transient failure quickly here; the default budget (minutes) is
        # exercised where a test says so (test_outcomes: a gateway down for 90 s).
        "step_retry_delays": [0.2, 0.2],
    }
    for key, value in (env or {}).items():  # AISOAR_FOO_BAR -> foo_bar
        values[key.removeprefix("AISOAR_").lower()] = value
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store, on SQLite and on a fresh PostgreSQL database (the production shape's)."""
    if request.param == "sqlite":
        yield Store(f"sqlite:///{tmp_path / 'aisoar.db'}")
        return
    from tests.servers.postgres import fresh_database  # a plugin of this file: imported after it

    postgres = request.getfixturevalue("postgres")
    made = Store(fresh_database(postgres))
    yield made
    made.engine.dispose()
