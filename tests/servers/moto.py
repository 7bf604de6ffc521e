"""The real moto server for tests (AWS APIs, IAM among them): ``moto_server`` from this venv
(``moto[server]``) on a free loopback port.

moto checks no credentials unless told to. The fixture creates an administrator user while
checking is off, and ``enforcing_auth()`` turns it on for a block: then every request must be
signed with an access key moto knows (a deleted key gets ``InvalidClientTokenId``, 403) and
the caller's IAM policies are evaluated by action (moto ignores their ``Resource``). An
Inactive key is still accepted by moto; real AWS refuses it.

The fixture FAILS (it does not skip) when the binary is missing: the AWS connector's tests
are meant to run against the real server.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.serving import free_port
from tests.servers.process import server_process, venv_binary

START_TIMEOUT = 20.0
REGION = "us-east-1"
ADMIN_USER = "moto-admin"
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


@dataclass(frozen=True)
class Moto:
    url: str
    admin_key_id: str
    admin_secret: str

    def client(self, service: str, key_id: str | None = None, secret: str | None = None) -> Any:
        """A boto3 client for arranging and checking state (the administrator's key by default),
        with botocore's retries off so a refusal is seen as it is."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=key_id or self.admin_key_id,
            aws_secret_access_key=secret or self.admin_secret,
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10),
        )

    @contextmanager
    def enforcing_auth(self) -> Iterator[None]:
        """moto checks signatures and IAM policies inside the block (and not after it)."""
        _reset_auth(self.url, "0")
        try:
            yield
        finally:
            _reset_auth(self.url, "inf")


def _reset_auth(url: str, count: str) -> None:
    answer = httpx.post(f"{url}/moto-api/reset-auth", content=count.encode(), timeout=5)
    assert answer.status_code == 200, f"moto refused reset-auth: {answer.status_code} {answer.text[:200]}"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Moto]:
    hint = "the AWS connector tests need the real server: pip install 'moto[server]==5.2.5'"
    binary = venv_binary("moto_server", hint)
    workdir = Path(tempfile.mkdtemp(prefix="aisoar-moto-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env: dict[str, str | None] = {"HOME": str(workdir), "INITIAL_NO_AUTH_ACTION_COUNT": None}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env[name] = None
    argv = [binary, "-H", "127.0.0.1", "-p", str(port)]
    try:
        with server_process("moto", argv, f"{url}/moto-api/", workdir, env=env, timeout=START_TIMEOUT):
            unchecked = Moto(url, "AKIAIOSFODNN7EXAMPLE", "moto-does-not-check-this-yet")
            iam = unchecked.client("iam")
            iam.create_user(UserName=ADMIN_USER)
            iam.put_user_policy(UserName=ADMIN_USER, PolicyName="everything", PolicyDocument=json.dumps(ADMIN_POLICY))
            key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
            yield Moto(url, str(key["AccessKeyId"]), str(key["SecretAccessKey"]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
