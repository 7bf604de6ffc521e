"""The generic HTTP action: host from configuration only, verified by a GET, the shared
connector checks (retries, storm, timeout, plan mode, no secret in output)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Header, HTTPException
from pydantic import ValidationError

from aisoar.evidence import EvidenceStore
from aisoar.store import Store
from connectors.http import GenericHttp, UnsafePath
from sandbox.serving import BackgroundServer
from tasks import REGISTRY
from tasks.base import ActionContext, Outcome
from tasks.http import HttpGet, HttpRequest
from tests import matrix
from tests.conftest import make_settings
from tests.faults import fault_proxy

TOKEN = "waf-token-never-print-0123456789"


class Waf:
    """A stand-in firewall API: blocks by IP, behind a bearer token."""

    def __init__(self) -> None:
        self.blocked: set[str] = set()
        self.lock = threading.Lock()

    def app(self) -> FastAPI:
        app = FastAPI()

        def auth(authorization: str | None) -> None:
            if authorization != f"Bearer {TOKEN}":
                raise HTTPException(401, "bad token")

        @app.get("/api/blocks/{ip}")
        def read(ip: str, authorization: str | None = Header(None)) -> dict[str, Any]:
            auth(authorization)
            with self.lock:
                return {"ip": ip, "blocked": ip in self.blocked}

        @app.post("/api/blocks", status_code=201)
        def block(body: dict[str, Any], authorization: str | None = Header(None)) -> dict[str, Any]:
            auth(authorization)
            with self.lock:
                self.blocked.add(str(body["ip"]))
            return {"ok": True}

        return app


@pytest.fixture()
def waf() -> Iterator[tuple[Waf, str]]:
    state = Waf()
    server = BackgroundServer(state.app()).start()
    yield state, f"{server.url}/api"
    server.stop()


def _ctx(tmp_path: Path, url: str, **overrides: Any) -> ActionContext:
    settings = make_settings(
        tmp_path / "data", http_endpoints={"waf": {"url": url, "token": TOKEN}}, http_timeout_seconds=2, **overrides
    )
    store = Store(settings.store_url)
    return ActionContext("INC-1", "p", "s", None, settings, store, EvidenceStore(settings.evidence_dir, store))


BLOCK = {
    "endpoint": "waf",
    "method": "POST",
    "path": "blocks",
    "body": {"ip": "203.0.113.9", "reason": "aisoar INC-1"},
    "verify": {"path": "blocks/203.0.113.9", "expect_json": {"/blocked": True}},
}


@pytest.mark.parametrize(
    "path",
    ["//evil.example/x", "http://evil.example/", "../admin", "a/../../b", "%2e%2e/admin", "a%2Fb", "x?y=1", "a b"],
)
def test_the_host_never_comes_from_a_step(path: str) -> None:
    with pytest.raises(ValidationError):
        HttpRequest.model_validate({**BLOCK, "path": path})
    client = GenericHttp("waf", "http://127.0.0.1:9/api")
    with pytest.raises(UnsafePath):
        client.url_for(path)


def test_a_joined_path_stays_under_the_base() -> None:
    client = GenericHttp("waf", "http://127.0.0.1:9/api/v2")
    assert client.url_for("blocks/1.2.3.4") == "http://127.0.0.1:9/api/v2/blocks/1.2.3.4"
    assert client.url_for("/blocks") == "http://127.0.0.1:9/api/v2/blocks"


def test_get_keeps_evidence_and_request_is_verified(waf: tuple[Waf, str], tmp_path: Path) -> None:
    state, url = waf
    ctx = _ctx(tmp_path, url)
    got = REGISTRY["http.get"].task.fn(ctx, HttpGet(endpoint="waf", path="blocks/203.0.113.9"))
    assert got.status is Outcome.ok and ctx.store.evidence_for("INC-1", asset="http:waf")

    inputs = HttpRequest.model_validate(BLOCK)
    entry = REGISTRY["http.request"]
    assert entry.info.effect.value == "destructive"
    assert entry.probe is not None
    assert not entry.probe(ctx, inputs, got).ok  # not blocked yet: the probe says so
    outcome = entry.task.fn(ctx, inputs)
    assert outcome.status is Outcome.ok and state.blocked == {"203.0.113.9"}
    assert entry.probe(ctx, inputs, outcome).ok
    again = entry.task.fn(ctx, inputs)  # the target's POST is idempotent; calling twice is harmless
    assert again.status is Outcome.ok and state.blocked == {"203.0.113.9"}

    wrong = HttpRequest.model_validate(
        {**BLOCK, "verify": {"path": "blocks/198.51.100.1", "expect_json": {"/blocked": True}}}
    )
    result = entry.probe(ctx, wrong, outcome)
    assert not result.ok and "/blocked is False" in result.detail


def test_plan_mode_changes_nothing(waf: tuple[Waf, str], tmp_path: Path) -> None:
    state, url = waf
    ctx = _ctx(tmp_path, url, plan_mode=True)
    planned = REGISTRY["http.request"].task.fn(ctx, HttpRequest.model_validate(BLOCK))
    assert planned.name == "Planned" and "would POST on waf:/blocks" in planned.message
    assert state.blocked == set()
    client = GenericHttp("waf", url, {"Authorization": f"Bearer {TOKEN}"}, plan=True)
    matrix.plan_changes_nothing(
        lambda: client.call("POST", "blocks", "POST", body={"ip": "1.1.1.1"}), lambda: set(state.blocked), "POST"
    )


def test_an_unknown_endpoint_is_skipped_visibly(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "http://127.0.0.1:9/api")
    skipped = REGISTRY["http.request"].task.fn(ctx, HttpRequest.model_validate({**BLOCK, "endpoint": "siem"}))
    assert skipped.name == "Not configured" and "AISOAR_HTTP_ENDPOINTS__siem__URL" in skipped.message


def test_retries_storm_timeout_and_no_secret(
    waf: tuple[Waf, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    state, url = waf
    with fault_proxy(url.removesuffix("/api")) as (proxy, proxy_url):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        client = GenericHttp("waf", f"{proxy_url}/api", headers, backoff=0.01, attempts=3, timeout=5.0)
        slow = GenericHttp("waf", f"{proxy_url}/api", headers, backoff=0.01, attempts=3, timeout=0.5)
        body = {"ip": "192.0.2.1"}
        matrix.retry_after_then_success(
            proxy, "POST /api/blocks", lambda: client.call("POST", "blocks", "POST", body=body, expect=(201,))
        )
        assert state.blocked == {"192.0.2.1"}
        error = matrix.storm_exhausts_retries(
            proxy,
            "GET /api/blocks",
            lambda: client.call("GET", "blocks/192.0.2.1", "GET"),
            attempts=3,
            starts_with="HTTP endpoint waf GET on waf:/blocks/192.0.2.1 failed (HTTP 500)",
        )
        matrix.times_out(proxy, "GET /api/blocks", lambda: slow.call("GET", "blocks/192.0.2.1", "GET"), attempts=3)
        sent = [s.headers.get("authorization", "") for s in proxy.seen]
        assert all(h == f"Bearer {TOKEN}" for h in sent)  # the token went to the configured host only
    matrix.secret_absent(TOKEN, caplog.text, str(error), repr(error.__dict__))
