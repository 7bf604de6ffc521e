"""The real MLflow tracking server (model registry + artifact proxy) for tests: one per test
session, on a free loopback port.

``mlflow server --backend-store-uri sqlite:///<tmp>/mlflow.db --artifacts-destination <tmp>/artifacts
--host 127.0.0.1 --port <free> --workers 1`` with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (one
process, not ten), ready when ``GET /health`` answers, its process group killed at the end.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.serving import free_port
from tests.servers.process import server_process, venv_binary

START_TIMEOUT = 60.0


@dataclass(frozen=True)
class MlflowServer:
    url: str
    path: Path


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[MlflowServer]:
    binary = venv_binary("mlflow", "the MLflow connector tests need the real server: pip install 'mlflow==3.17.2'")
    directory = Path(tempfile.mkdtemp(prefix="aisoar-mlflow-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        binary,
        "server",
        "--backend-store-uri",
        f"sqlite:///{directory / 'mlflow.db'}",
        "--artifacts-destination",
        str(directory / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    try:
        with server_process("MLflow", argv, f"{url}/health", directory, env=env, timeout=START_TIMEOUT):
            yield MlflowServer(url, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
