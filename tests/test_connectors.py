"""Connectors: retries with Retry-After, bounded failure, timeouts, idempotency, no secrets."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from connectors.errors import ConnectorError
from connectors.litellm import LiteLLMGateway
from connectors.openai import OpenAIAdmin
from sandbox.serving import BackgroundServer
from sandbox.stack import DEMO_KEY_ID, DEMO_PROJECT, DEMO_SECRET, Sandbox

MASTER = "sk-master-never-print-me-123456"


class Script:
    """A gateway that answers a scripted sequence of statuses on /key/block."""

    def __init__(self, statuses: list[int], delay: float = 0.0) -> None:
        self.statuses = statuses
        self.delay = delay
        self.calls: list[float] = []

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/key/block")
        def block() -> JSONResponse:
            self.calls.append(time.monotonic())
            time.sleep(self.delay)
            status = self.statuses[min(len(self.calls) - 1, len(self.statuses) - 1)]
            headers = {"Retry-After": "1"} if status == 429 else {}
            return JSONResponse(status_code=status, content={"blocked": status == 200}, headers=headers)

        return app


@pytest.fixture()
def serve() -> Iterator[Any]:
    servers: list[BackgroundServer] = []

    def start(script: Script) -> str:
        server = BackgroundServer(script.app()).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


def test_429_with_retry_after_then_success(serve: Any) -> None:
    script = Script([429, 200])
    gateway = LiteLLMGateway(serve(script), MASTER, backoff=0.01)
    assert gateway.block_key("a" * 64)["blocked"] is True
    assert len(script.calls) == 2
    assert script.calls[1] - script.calls[0] >= 0.95  # waited as Retry-After said


def test_a_500_storm_ends_in_a_clear_error(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    script = Script([500])
    gateway = LiteLLMGateway(serve(script), MASTER, backoff=0.01, attempts=4)
    with pytest.raises(ConnectorError) as caught:
        gateway.block_key("b" * 64)
    assert len(script.calls) == 4
    message = str(caught.value)
    assert message.startswith("LiteLLM gateway block key on key sha256:bbbbbbbbbbbb failed (HTTP 500)")
    assert MASTER not in message and MASTER not in caplog.text


def test_a_timeout_is_reported_as_such(serve: Any) -> None:
    script = Script([200], delay=1.0)
    gateway = LiteLLMGateway(serve(script), MASTER, timeout=0.2, attempts=2, backoff=0.01)
    with pytest.raises(ConnectorError, match=r"failed \(timeout\)"):
        gateway.block_key("c" * 64)


def test_4xx_is_not_retried(serve: Any) -> None:
    script = Script([401])
    with pytest.raises(ConnectorError, match="HTTP 401"):
        LiteLLMGateway(serve(script), MASTER, backoff=0.01).block_key("d" * 64)
    assert len(script.calls) == 1


def test_block_and_delete_twice_are_harmless(sandbox: Sandbox) -> None:
    env = sandbox.start(("litellm", "openai"))
    gateway = LiteLLMGateway(env["AISOAR_LITELLM_URL"], env["AISOAR_LITELLM_MASTER_KEY"])
    key_hash = hashlib.sha256(DEMO_SECRET.encode()).hexdigest()
    gateway.block_key(key_hash)
    gateway.block_key(key_hash)
    info = gateway.key_info(key_hash)
    assert info is not None and info["blocked"] is True
    assert gateway.key_info("e" * 64) is None
    admin = OpenAIAdmin(env["AISOAR_OPENAI_URL"], env["AISOAR_OPENAI_ADMIN_KEY"])
    assert admin.delete_project_key(DEMO_PROJECT, DEMO_KEY_ID) is True
    assert admin.delete_project_key(DEMO_PROJECT, DEMO_KEY_ID) is False
    assert admin.get_project_key(DEMO_PROJECT, DEMO_KEY_ID) is None
