"""The real Chroma server for tests: one per test session, on a free loopback port.

``chroma run --path <tmp> --host 127.0.0.1 --port <free>`` (the Rust server of chromadb 1.x),
ready when ``GET /api/v2/heartbeat`` answers, killed at the end of the session.
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

START_TIMEOUT = 30.0


@dataclass(frozen=True)
class ChromaServer:
    url: str
    path: Path


@pytest.fixture(scope="session")
def chroma_server() -> Iterator[ChromaServer]:
    binary = venv_binary("chroma", "the Chroma connector tests need the real server: pip install 'chromadb==1.5.9'")
    directory = Path(tempfile.mkdtemp(prefix="aisoar-chroma-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [binary, "run", "--path", str(directory / "db"), "--host", "127.0.0.1", "--port", str(port)]
    try:
        with server_process(
            "Chroma",
            argv,
            f"{url}/api/v2/heartbeat",
            directory,
            env={"ANONYMIZED_TELEMETRY": "False"},
            timeout=START_TIMEOUT,
        ):
            yield ChromaServer(url, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
