"""The agent control plane: the stand-in runtime enforces the contract, the connector passes
the shared connector checks through a FaultProxy, and every agent.* action works through the
registry with its probe."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.schemas.objects import State
from pydantic import ValidationError

from aisoar.config import PROJECT_ROOT
from aisoar.evidence import EvidenceStore
from aisoar.ingress.adapters import generic_json
from aisoar.models import Severity
from aisoar.store import Store
from connectors.agent import AgentControlPlane, _seg
from connectors.errors import ConnectorError
from sandbox.agent import AgentRuntimeState, create_app, seed_demo
from sandbox.serving import BackgroundServer
from tasks import REGISTRY
from tasks.agent import (
    AgentEvidenceInputs,
    GuardrailInputs,
    InstanceInputs,
    IpInputs,
    PurgeInputs,
    RateLimitInputs,
    ResetInputs,
    RestoreGuardrailInputs,
    SessionInputs,
    SubjectInputs,
    ToolInputs,
    UnblockIpInputs,
    UnblockUserInputs,
    UserInputs,
)
from tasks.base import ActionContext, Outcome, StepOutcome
from tests import matrix
from tests.conftest import make_settings
from tests.faults import FaultProxy, fault_proxy
from tests.walk import outcome_of

AGENT = "support-bot"
WHY = {"reason": "test containment", "incident_id": "INC-test"}
PUBLIC_IP = "45.33.32.156"


class Runtime:
    def __init__(self) -> None:
        self.state = AgentRuntimeState()
        seed_demo(self.state)
        self.server = BackgroundServer(create_app(self.state)).start()
        self.url = self.server.url
        self.http = httpx.Client(base_url=self.url, timeout=5)

    def plane(self, url: str | None = None, **kwargs: Any) -> AgentControlPlane:
        options: dict[str, Any] = {"backoff": 0.01, "attempts": 3, "timeout": 5.0} | kwargs
        return AgentControlPlane(url or self.url, self.state.token, **options)

    def invoke(
        self, tool: str = "web.fetch", user: str = "u-42", session: str = "s-new", ip: str = PUBLIC_IP, **extra: Any
    ) -> httpx.Response:
        body = {"session": session, "user": user, "tool": tool, "args": {"url": "https://example.org"}, **extra}
        return self.http.post(f"/v1/agents/{AGENT}/invoke", json=body, headers={"X-Forwarded-For": ip})

    def memory_ids(self) -> list[str]:
        return [item["id"] for item in self.state.agents[AGENT].memory]

    def poisoned_id(self) -> str:
        return str(next(i["id"] for i in self.state.agents[AGENT].memory if "attacker" in i["content"]))

    def stop(self) -> None:
        self.http.close()
        self.server.stop()


@pytest.fixture()
def runtime() -> Iterator[Runtime]:
    started = Runtime()
    yield started
    started.stop()


@pytest.fixture()
def proxied(runtime: Runtime) -> Iterator[tuple[FaultProxy, str]]:
    with fault_proxy(runtime.url) as (proxy, url):
        yield proxy, url


def code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


# the contract and its enforcement ----------------------------------------------------------
def test_the_contract_answers_errors_in_one_shape(runtime: Runtime) -> None:
    assert runtime.http.get(f"/v1/agents/{AGENT}/tools").status_code == 401
    bad = runtime.http.get(f"/v1/agents/{AGENT}/tools", headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401 and code(bad) == "unauthorized"
    auth = {"Authorization": f"Bearer {runtime.state.token}"}
    missing = runtime.http.get("/v1/agents/nobody/tools", headers=auth)
    assert missing.status_code == 404 and code(missing) == "agent_not_found"
    assert code(runtime.http.get("/v1/sessions/nope", headers=auth)) == "session_not_found"
    no_reason = runtime.http.post(f"/v1/agents/{AGENT}/tools/web.fetch/disable", json={}, headers=auth)
    assert no_reason.status_code == 422 and code(no_reason) == "invalid_request"
    assert "reason" in no_reason.json()["error"]["message"]
    assert runtime.state.agents[AGENT].tools["web.fetch"].enabled is True
    assert runtime.plane().check() == "agent control plane reachable, token accepted (1 agents)"


def test_a_disabled_tool_is_refused_and_enabled_again(runtime: Runtime) -> None:
    plane = runtime.plane()
    assert runtime.invoke().status_code == 200
    assert plane.set_tool(AGENT, "web.fetch", False, **WHY)["changed"] is True
    assert plane.set_tool(AGENT, "web.fetch", False, **WHY)["changed"] is False  # twice is harmless
    refused = runtime.invoke()
    assert refused.status_code == 403 and code(refused) == "tool_disabled"
    assert runtime.invoke(tool="crm.lookup").status_code == 200  # only that tool
    assert {t["tool"]: t["enabled"] for t in plane.tools(AGENT)}["web.fetch"] is False
    plane.set_tool(AGENT, "web.fetch", True, **WHY)
    assert runtime.invoke().status_code == 200
    with pytest.raises(ConnectorError, match=r"HTTP 404"):
        plane.set_tool(AGENT, "no.such.tool", False, **WHY)
    audit, complete = plane.audit()
    assert complete and [e["action"] for e in audit] == ["tool.disable", "tool.disable", "tool.enable"]
    assert all(e["reason"] == "test containment" and e["incident_id"] == "INC-test" for e in audit)
    calls, _ = plane.tool_calls(AGENT)
    assert [c["outcome"] for c in calls] == ["allowed", "refused:tool_disabled", "allowed", "allowed"]
    assert calls[0]["ip"] == PUBLIC_IP and calls[0]["user"] == "u-42"


def test_an_offline_instance_refuses(runtime: Runtime) -> None:
    plane = runtime.plane()
    plane.set_instance(AGENT, "i-1", False, **WHY)
    assert plane.instance(AGENT, "i-1")["status"] == "offline"
    refused = runtime.invoke(instance="i-1")
    assert refused.status_code == 503 and code(refused) == "agent_offline"
    assert runtime.invoke().json()["instance"] == "i-2"  # the other instance still serves
    plane.set_instance(AGENT, "i-2", False, **WHY)
    assert code(runtime.invoke()) == "agent_offline"
    plane.set_instance(AGENT, "i-1", True, **WHY)
    assert runtime.invoke(instance="i-1").status_code == 200


def test_memory_export_is_paginated_and_purge_and_reset_work(runtime: Runtime) -> None:
    plane = runtime.plane()
    agent = runtime.state.agents[AGENT]
    for n in range(1100):  # more than two pages of the connector (500 per page)
        runtime.state.remember(agent, f"note {n}", "seed")
    items, complete = plane.memory(AGENT)
    assert complete and len(items) == 1103 and [i["id"] for i in items] == runtime.memory_ids()
    partial, complete = plane.memory(AGENT, limit=600)
    assert len(partial) == 600 and not complete
    poisoned = runtime.poisoned_id()
    answer = plane.purge_memory(AGENT, [poisoned, "mem-unknown"], **WHY)
    assert answer["purged"] == [poisoned] and answer["not_found"] == ["mem-unknown"]
    assert plane.purge_memory(AGENT, [poisoned], **WHY)["changed"] is False  # twice is harmless
    assert poisoned not in [i["id"] for i in plane.memory(AGENT)[0]]
    reset = plane.reset_memory(AGENT, "default", **WHY)
    assert reset["changed"] is True and len(reset["ids"]) == 2 and runtime.memory_ids() == reset["ids"]
    assert plane.purge_memory(AGENT, None, **WHY)["remaining"] == 0
    assert plane.memory(AGENT) == ([], True)


def test_a_quarantined_session_refuses(runtime: Runtime) -> None:
    plane = runtime.plane()
    assert runtime.invoke(session="s-123").status_code == 200
    assert plane.set_session("s-123", True, **WHY)["changed"] is True
    assert plane.set_session("s-123", True, **WHY)["changed"] is False  # twice is harmless
    refused = runtime.invoke(session="s-123")
    assert refused.status_code == 403 and code(refused) == "session_quarantined"
    assert runtime.invoke(session="s-other").status_code == 200
    seen = plane.session("s-123")
    assert seen is not None and seen["status"] == "quarantined" and seen["user"] == "u-42"
    assert plane.session("s-none") is None
    plane.set_session("s-123", False, **WHY)
    assert runtime.invoke(session="s-123").status_code == 200


def test_config_changes_are_visible_and_lockdown_refuses_tools(runtime: Runtime) -> None:
    plane = runtime.plane()
    answer = plane.patch_config(AGENT, temperature=0.1, guardrail_mode="strict", **WHY)
    assert answer["previous"] == {"temperature": 0.7, "guardrail_mode": "standard"}
    assert answer["current"] == {"temperature": 0.1, "guardrail_mode": "strict"}
    seen = runtime.invoke().json()
    assert seen["temperature"] == 0.1 and seen["guardrail_mode"] == "strict"
    plane.patch_config(AGENT, temperature=None, guardrail_mode="lockdown", **WHY)
    assert code(runtime.invoke()) == "guardrail_lockdown"
    assert plane.config(AGENT)["temperature"] == 0.1


def test_blocked_users_and_networks_are_refused(runtime: Runtime) -> None:
    plane = runtime.plane()
    plane.add_block("user", "u-42", None, **WHY)
    assert plane.add_block("user", "u-42", None, **WHY)["changed"] is False
    assert code(runtime.invoke()) == "user_blocked"
    assert runtime.invoke(user="u-7").status_code == 200
    plane.add_block("ip", "45.33.32.0/24", None, **WHY)  # a CIDR: its "/" is quoted in the URL
    assert code(runtime.invoke(user="u-7")) == "ip_blocked"
    assert runtime.invoke(user="u-7", ip="45.33.33.1").status_code == 200
    assert plane.block("ip", "45.33.32.0/24") is not None and plane.block("ip", "45.33.34.0/24") is None
    assert {(b["kind"], b["value"]) for b in plane.blocks()} == {("user", "u-42"), ("ip", "45.33.32.0/24")}
    plane.remove_block("ip", "45.33.32.0/24", **WHY)
    assert plane.remove_block("ip", "45.33.32.0/24", **WHY)["changed"] is False
    plane.remove_block("user", "u-42", **WHY)
    assert runtime.invoke().status_code == 200


def test_a_rate_limit_answers_429_when_exceeded(runtime: Runtime) -> None:
    plane = runtime.plane()
    plane.set_rate_limit("user", "u-42", 2, None, **WHY)
    assert plane.set_rate_limit("user", "u-42", 2, None, **WHY)["changed"] is False
    assert [runtime.invoke().status_code for _ in range(2)] == [200, 200]
    limited = runtime.invoke()
    assert limited.status_code == 429 and code(limited) == "rate_limited" and int(limited.headers["retry-after"]) >= 1
    assert runtime.invoke(user="u-7").status_code == 200
    assert plane.rate_limit("user", "u-42") is not None
    plane.clear_rate_limit("user", "u-42", **WHY)
    assert plane.rate_limit("user", "u-42") is None
    assert runtime.invoke().status_code == 200


# the shared connector checks -----------------------------------------------------------------
def test_retry_after_is_honoured(runtime: Runtime, proxied: tuple[FaultProxy, str]) -> None:
    proxy, url = proxied
    plane = runtime.plane(url)
    answer = matrix.retry_after_then_success(
        proxy, r"POST /v1/agents/.*/disable", lambda: plane.set_tool(AGENT, "web.fetch", False, **WHY)
    )
    assert answer["enabled"] is False and runtime.state.agents[AGENT].tools["web.fetch"].enabled is False


def test_a_500_storm_and_a_timeout_end_in_clear_errors_without_the_token(
    runtime: Runtime, proxied: tuple[FaultProxy, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    proxy, url = proxied
    plane = runtime.plane(url, attempts=3)
    storm = matrix.storm_exhausts_retries(
        proxy,
        r"POST /v1/agents/.*/disable",
        lambda: plane.set_tool(AGENT, "web.fetch", False, **WHY),
        attempts=3,
        starts_with="Agent control plane disable tool on agent:support-bot/tool:web.fetch failed (HTTP 500)",
    )
    slow = runtime.plane(url, attempts=2, timeout=0.3)
    matrix.times_out(proxy, r"GET /v1/blocks", lambda: slow.block("ip", PUBLIC_IP), attempts=2, delay=1.0)
    with pytest.raises(ConnectorError) as refused:
        AgentControlPlane(url, "wrong-token", backoff=0.01).tools(AGENT)
    assert refused.value.status == 401
    proxy.script()
    results = json.dumps([plane.tools(AGENT), plane.config(AGENT), plane.audit()[0]])
    matrix.secret_absent(runtime.state.token, caplog.text, str(storm), repr(storm), str(refused.value), results)


def test_plan_mode_changes_nothing(runtime: Runtime) -> None:
    plan = runtime.plane(plan=True)
    assert plan.tools(AGENT)  # reads still run in plan mode

    def state() -> Any:
        s = runtime.state
        return (
            [(t.name, t.enabled) for t in s.agents[AGENT].tools.values()],
            runtime.memory_ids(),
            sorted(s.blocks),
            sorted(s.rate_limits),
            s.agents[AGENT].guardrail_mode,
            len(s.audit),
        )

    matrix.plan_changes_nothing(lambda: plan.set_tool(AGENT, "web.fetch", False, **WHY), state, "disable tool")
    matrix.plan_changes_nothing(lambda: plan.purge_memory(AGENT, None, **WHY), state, "purge memory")
    matrix.plan_changes_nothing(lambda: plan.add_block("ip", PUBLIC_IP, None, **WHY), state, "block ip")
    matrix.plan_changes_nothing(lambda: plan.set_rate_limit("user", "u-1", 5, None, **WHY), state, "set rate limit")
    matrix.plan_changes_nothing(
        lambda: plan.patch_config(AGENT, temperature=0.0, guardrail_mode="lockdown", **WHY), state, "set config"
    )


def test_path_segments_are_quoted_and_checked() -> None:
    assert _seg("10.0.0.0/24") == "10.0.0.0%2F24" and _seg("a b?") == "a%20b%3F"
    for bad in ("", ".", ".."):
        with pytest.raises(ValueError):
            _seg(bad)


# inputs from alert data --------------------------------------------------------------------
def test_inputs_from_alerts_are_validated_strictly() -> None:
    for bad in ({"agent": "../admin", "tool": "x"}, {"agent": AGENT, "tool": "x/../../v1/blocks"}):
        with pytest.raises(ValidationError):
            ToolInputs.model_validate(bad)
    with pytest.raises(ValidationError):
        UserInputs(user="u-1/../x")
    for unsafe in ("127.0.0.1", "0.0.0.0/0", "169.254.169.254", "45.0.0.0/8", "::1", "10.1.2.3", "not-an-ip"):
        with pytest.raises(ValidationError):
            IpInputs(ip=unsafe)
    assert IpInputs(ip="10.1.2.3", allow_private=True).ip == "10.1.2.3"
    assert IpInputs(ip="45.33.32.0/24").ip == "45.33.32.0/24" and IpInputs(ip="45.33.32.156/32").ip == PUBLIC_IP
    with pytest.raises(ValidationError):
        IpInputs(ip="45.33.32.1/24")  # host bits set: ambiguous, refused
    assert UnblockIpInputs(ip="10.1.2.3").ip == "10.1.2.3"  # lifting a block is always safe
    with pytest.raises(ValidationError):
        RateLimitInputs(kind="ip", value="127.0.0.1", requests_per_minute=5)
    assert PurgeInputs.model_validate({"agent": AGENT, "ids": "mem-a, mem-b mem-c"}).ids == ["mem-a", "mem-b", "mem-c"]
    for bad_purge in ({"agent": AGENT}, {"agent": AGENT, "ids": ["mem-a"], "all": True}, {"agent": AGENT, "ids": ""}):
        with pytest.raises(ValidationError):
            PurgeInputs.model_validate(bad_purge)
    with pytest.raises(ValidationError):
        GuardrailInputs(agent=AGENT, guardrail_mode=None)
    assert ToolInputs(agent=AGENT, tool="web.fetch").asset == f"agent:{AGENT}"


# the actions through the registry ------------------------------------------------------------
def _context(tmp_path: Path, env: dict[str, str], **overrides: object) -> ActionContext:
    settings = make_settings(tmp_path / "data", env=env, **overrides)
    store = Store(settings.store_url)
    alert = generic_json("generic", (PROJECT_ROOT / "examples/alerts/leaked-openai-key.json").read_bytes())
    store.accept_alert(alert, "delivery")
    incident_id, _ = store.correlate(alert, alert.incident_type, Severity.critical, timedelta(hours=1))
    return ActionContext(
        incident_id, "agent-tool-misuse", "step", None, settings, store, EvidenceStore(settings.evidence_dir, store)
    )


def _env(runtime: Runtime) -> dict[str, str]:
    return {"AISOAR_AGENT_URL": runtime.url, "AISOAR_AGENT_TOKEN": runtime.state.token}


def run(ctx: ActionContext, name: str, inputs: Any) -> StepOutcome:
    outcome = REGISTRY[name].task.fn(ctx, inputs)
    assert isinstance(outcome, StepOutcome), outcome
    assert outcome.status is Outcome.ok, outcome.summary
    probe = REGISTRY[name].probe
    assert probe is not None
    verdict = probe(ctx, inputs, outcome)
    assert verdict.ok, verdict.detail
    return outcome


def test_evidence_then_containment_through_the_registry(runtime: Runtime, tmp_path: Path) -> None:
    ctx = _context(tmp_path, _env(runtime))
    runtime.invoke(session="s-123")
    poisoned = runtime.poisoned_id()
    purge = PurgeInputs(agent=AGENT, ids=[poisoned])
    refused = REGISTRY["agent.purge_memory"].task.fn(ctx, purge)
    assert isinstance(refused, State) and refused.type.value == "FAILED"  # never a green Completed
    refused = outcome_of(refused)
    assert refused.status is Outcome.failed and "memory export" in refused.summary
    assert poisoned in runtime.memory_ids()

    collected = REGISTRY["agent.collect_evidence"].task.fn(ctx, AgentEvidenceInputs(agent=AGENT, session="s-123"))
    assert isinstance(collected, StepOutcome) and collected.status is Outcome.ok
    assert collected.output["tool_calls"] == 1 and collected.output["memory_items"] == 3
    kept = ctx.store.evidence_for(ctx.incident_id, asset=f"agent:{AGENT}")
    assert len(kept) == 3 and any("memory export" in k.description for k in kept)

    unknown_agent = REGISTRY["agent.collect_evidence"].task.fn(ctx, AgentEvidenceInputs(agent="ghost"))
    assert isinstance(unknown_agent, StepOutcome) and unknown_agent.output["found"] is False
    assert len(ctx.store.evidence_for(ctx.incident_id, asset="agent:ghost")) == 1

    tool = ToolInputs(agent=AGENT, tool="web.fetch")
    run(ctx, "agent.disable_tool", tool)
    assert run(ctx, "agent.disable_tool", tool).output["changed"] is False  # twice is harmless
    assert code(runtime.invoke()) == "tool_disabled"
    run(ctx, "agent.enable_tool", tool)
    assert runtime.invoke().status_code == 200
    unknown = REGISTRY["agent.disable_tool"].task.fn(ctx, ToolInputs(agent=AGENT, tool="nope"))
    assert getattr(unknown, "name", "") == "No such asset"

    instance = InstanceInputs(agent=AGENT, instance="i-1")
    run(ctx, "agent.take_offline", instance)
    run(ctx, "agent.bring_online", instance)

    session = SessionInputs(session="s-123")
    run(ctx, "agent.quarantine_session", session)
    assert code(runtime.invoke(session="s-123")) == "session_quarantined"
    run(ctx, "agent.release_session", session)

    tightened = run(ctx, "agent.set_guardrails", GuardrailInputs(agent=AGENT, temperature=0.2, guardrail_mode="strict"))
    assert tightened.output["previous_temperature"] == 0.7 and tightened.output["previous_guardrail_mode"] == "standard"
    again = run(ctx, "agent.set_guardrails", GuardrailInputs(agent=AGENT, temperature=0.5))
    assert again.output["changed"] is False and runtime.state.agents[AGENT].temperature == 0.2  # never loosens
    restore = RestoreGuardrailInputs(
        agent=AGENT,
        temperature=tightened.output["previous_temperature"],
        guardrail_mode=tightened.output["previous_guardrail_mode"],
    )
    run(ctx, "agent.restore_guardrails", restore)
    assert runtime.state.agents[AGENT].guardrail_mode == "standard"

    purged = run(ctx, "agent.purge_memory", purge)
    assert purged.output["purged"] == [poisoned] and poisoned not in runtime.memory_ids()
    run(ctx, "agent.purge_memory", purge)  # twice is harmless: already gone, probe still holds
    run(ctx, "agent.reset_memory", ResetInputs(agent=AGENT))
    assert len(runtime.memory_ids()) == 2

    audit = runtime.state.audit
    assert audit and all(e["incident_id"] == ctx.incident_id for e in audit)
    assert all("agent-tool-misuse" in e["reason"] for e in audit)


def test_subject_controls_through_the_registry(runtime: Runtime, tmp_path: Path) -> None:
    ctx = _context(tmp_path, _env(runtime))
    run(ctx, "agent.block_user", UserInputs(user="u-42"))
    run(ctx, "agent.block_user", UserInputs(user="u-42"))
    assert code(runtime.invoke()) == "user_blocked"
    run(ctx, "agent.unblock_user", UnblockUserInputs(user="u-42"))
    run(ctx, "agent.block_ip", IpInputs(ip="45.33.32.0/24"))
    assert code(runtime.invoke(user="u-7")) == "ip_blocked"
    run(ctx, "agent.unblock_ip", UnblockIpInputs(ip="45.33.32.0/24"))
    run(ctx, "agent.unblock_ip", UnblockIpInputs(ip="45.33.32.0/24"))
    assert runtime.invoke(user="u-7").status_code == 200
    limit = RateLimitInputs(kind="ip", value=PUBLIC_IP, requests_per_minute=1)
    run(ctx, "agent.rate_limit", limit)
    assert runtime.invoke().status_code == 200 and code(runtime.invoke()) == "rate_limited"
    run(ctx, "agent.clear_rate_limit", SubjectInputs(kind="ip", value=PUBLIC_IP))
    assert runtime.invoke().status_code == 200


def test_plan_mode_and_missing_settings_through_the_registry(runtime: Runtime, tmp_path: Path) -> None:
    ctx = _context(tmp_path, _env(runtime), plan_mode=True)
    planned = REGISTRY["agent.disable_tool"].task.fn(ctx, ToolInputs(agent=AGENT, tool="web.fetch"))
    assert isinstance(planned, State) and planned.name == "Planned" and "nothing was changed" in str(planned.message)
    assert runtime.state.agents[AGENT].tools["web.fetch"].enabled is True and runtime.state.audit == []
    bare = _context(tmp_path / "bare", {})
    skipped = REGISTRY["agent.block_user"].task.fn(bare, UserInputs(user="u-42"))
    assert isinstance(skipped, State) and skipped.name == "Not configured"
    assert "AISOAR_AGENT_URL" in str(skipped.message) and "AISOAR_AGENT_TOKEN" in str(skipped.message)
