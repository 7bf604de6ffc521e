"""The real Chroma server for tests: one per test session, on a free loopback port.

``chroma run --path <tmp> --host 127.0.0.1 --port <free>`` (the Rust server of chromadb 1.x),
ready when ``GET /api/v2/heartbeat`` answers, killed at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from aisoar.sandbox.serving import free_port

START_TIMEOUT = 30.0


@dataclass(frozen=True)
class ChromaServer:
    url: str
    path: Path


def _chroma_binary() -> str:
    beside = Path(sys.executable).parent / "chroma"
    if beside.exists():
        return str(beside)
    found = shutil.which("chroma")
    if not found:
        pytest.fail(
            "cannot start Chroma: no `chroma` executable next to the interpreter or on PATH (pip install chromadb)"
        )
    return found


@pytest.fixture(scope="session")
def chroma_server() -> Iterator[ChromaServer]:
    directory = Path(tempfile.mkdtemp(prefix="aisoar-chroma-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "DO_NOT_TRACK": "1"}
    log = (directory / "server.log").open("wb")
    process = subprocess.Popen(
        [_chroma_binary(), "run", "--path", str(directory / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=directory,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                log.flush()
                tail = (directory / "server.log").read_text(errors="replace")[-1500:]
                pytest.fail(f"Chroma exited during start-up (code {process.returncode}):\n{tail}")
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Chroma did not answer GET /api/v2/heartbeat on {url} within {START_TIMEOUT}s")
            time.sleep(0.1)
        yield ChromaServer(url, directory)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)
