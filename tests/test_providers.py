"""Provider key connectors: OpenAI Admin API service accounts and Anthropic Admin API keys;
their full matrix (retries, storm, timeout, plan mode, no secrets) and their actions
through the registry."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from aisoar.config import PROJECT_ROOT
from aisoar.evidence import EvidenceStore
from aisoar.ingress.adapters import generic_json
from aisoar.models import Severity
from aisoar.store import Store
from connectors.anthropic import AnthropicAdmin
from connectors.errors import ConnectorError
from connectors.openai import OpenAIAdmin
from sandbox.anthropic import AnthropicState, create_app
from sandbox.serving import BackgroundServer
from sandbox.stack import DEMO_PROJECT, Sandbox
from tasks import REGISTRY
from tasks.anthropic import AnthropicKey
from tasks.base import ActionContext, Outcome, StepOutcome
from tasks.openai import ServiceAccount
from tests import matrix
from tests.conftest import make_settings
from tests.faults import fault_proxy

ADMIN_ANTHROPIC = "sk-ant-admin01-sandbox-never-print-me-000000000000"
LEAKED_ANTHROPIC = "sk-ant-api03-sandbox-leaked-key-000000000000000000000001"  # a sandbox-only fake key
OTHER_ANTHROPIC = "sk-ant-api03-sandbox-other-key-0000000000000000000000002"
LEAKED_ID = "apikey_01SandboxLeakedKey0000001"
OTHER_ID = "apikey_01SandboxOtherKey00000002"
ARCHIVED_ID = "apikey_01SandboxArchived0000003"
BOT_ACCOUNT = "svc_acct_support_bot"
OTHER_ACCOUNT = "svc_acct_billing"
NOT_RUN = StepOutcome(status=Outcome.ok, summary="not run")


def context(tmp_path: Path, env: dict[str, str] | None = None, **overrides: object) -> ActionContext:
    settings = make_settings(tmp_path / "data", env=env, **overrides)
    store = Store(settings.store_url)
    alert = generic_json("generic", (PROJECT_ROOT / "examples/alerts/leaked-openai-key.json").read_bytes())
    store.accept_alert(alert, "delivery")
    incident_id, _ = store.correlate(alert, alert.incident_type, Severity.critical, timedelta(hours=1))
    return ActionContext(
        incident_id, "leaked-llm-api-key", "step", None, settings, store, EvidenceStore(settings.evidence_dir, store)
    )


# == OpenAI Admin API: project service accounts ========================================
@pytest.fixture()
def openai_env(sandbox: Sandbox) -> Iterator[dict[str, str]]:
    state = sandbox.openai
    state.add_service_account(DEMO_PROJECT, "support-bot", BOT_ACCOUNT)
    state.add_key(
        DEMO_PROJECT, "sk-proj-BOT1" + "a" * 40, name="bot-1", key_id="key_bot_1", service_account_id=BOT_ACCOUNT
    )
    state.add_key(
        DEMO_PROJECT, "sk-proj-BOT2" + "b" * 40, name="bot-2", key_id="key_bot_2", service_account_id=BOT_ACCOUNT
    )
    state.add_service_account(DEMO_PROJECT, "billing", OTHER_ACCOUNT)
    state.add_key(
        DEMO_PROJECT, "sk-proj-BILL" + "c" * 40, name="bill", key_id="key_bill", service_account_id=OTHER_ACCOUNT
    )
    yield sandbox.start(("openai",))


def openai_admin(env: dict[str, str], **kwargs: Any) -> OpenAIAdmin:
    return OpenAIAdmin(env["AISOAR_OPENAI_URL"], env["AISOAR_OPENAI_ADMIN_KEY"], **kwargs)


def openai_chat(env: dict[str, str], secret: str) -> int:
    return httpx.post(
        f"{env['AISOAR_OPENAI_URL']}/chat/completions", headers={"Authorization": f"Bearer {secret}"}, json={}
    ).status_code


def test_deleting_a_service_account_deletes_its_keys(openai_env: dict[str, str], sandbox: Sandbox) -> None:
    admin = openai_admin(openai_env)
    account = admin.get_service_account(DEMO_PROJECT, BOT_ACCOUNT)
    assert account is not None and account["name"] == "support-bot"
    assert account["object"] == "organization.project.service_account"
    assert [k["id"] for k in admin.service_account_keys(DEMO_PROJECT, BOT_ACCOUNT)] == ["key_bot_1", "key_bot_2"]
    assert openai_chat(openai_env, "sk-proj-BOT1" + "a" * 40) == 200
    assert admin.delete_service_account(DEMO_PROJECT, BOT_ACCOUNT) is True
    assert admin.delete_service_account(DEMO_PROJECT, BOT_ACCOUNT) is False  # twice is harmless
    assert admin.get_service_account(DEMO_PROJECT, BOT_ACCOUNT) is None
    assert BOT_ACCOUNT not in [a["id"] for a in admin.list_service_accounts(DEMO_PROJECT)]
    assert admin.get_project_key(DEMO_PROJECT, "key_bot_1") is None  # its keys went with it
    assert admin.get_project_key(DEMO_PROJECT, "key_bot_2") is None
    assert openai_chat(openai_env, "sk-proj-BOT1" + "a" * 40) == 401
    assert admin.get_project_key(DEMO_PROJECT, "key_bill") is not None  # another account's key stays
    assert openai_chat(openai_env, "sk-proj-BILL" + "c" * 40) == 200


def test_lists_follow_the_cursor(openai_env: dict[str, str], sandbox: Sandbox) -> None:
    for i in range(140):
        sandbox.openai.add_service_account(DEMO_PROJECT, f"bulk-{i}", f"svc_acct_bulk_{i:03d}")
    listed = openai_admin(openai_env).list_service_accounts(DEMO_PROJECT)
    assert len(listed) == len(sandbox.openai.service_accounts[DEMO_PROJECT]) > 140
    assert len({a["id"] for a in listed}) == len(listed)


def test_openai_check_and_a_wrong_admin_key(openai_env: dict[str, str]) -> None:
    assert "admin key accepted" in openai_admin(openai_env).check()
    wrong = OpenAIAdmin(openai_env["AISOAR_OPENAI_URL"], "sk-admin-wrong-key", backoff=0.01)
    with pytest.raises(ConnectorError) as caught:
        wrong.check()
    assert str(caught.value).startswith("OpenAI Admin API list projects on the organization failed (HTTP 401)")
    assert "sk-admin-wrong-key" not in str(caught.value)


def test_openai_plan_mode_changes_nothing(openai_env: dict[str, str], sandbox: Sandbox) -> None:
    planner = openai_admin(openai_env, plan=True)

    def state() -> str:
        return json.dumps([sandbox.openai.service_accounts, sandbox.openai.projects], sort_keys=True)

    matrix.plan_changes_nothing(
        lambda: planner.delete_service_account(DEMO_PROJECT, BOT_ACCOUNT), state, "delete service account"
    )
    assert planner.get_service_account(DEMO_PROJECT, BOT_ACCOUNT) is not None  # reads still run


def test_openai_fault_matrix(openai_env: dict[str, str], sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = openai_env["AISOAR_OPENAI_ADMIN_KEY"]
    upstream = openai_env["AISOAR_OPENAI_URL"].removesuffix("/v1")
    with fault_proxy(upstream) as (proxy, url):
        admin = OpenAIAdmin(f"{url}/v1", key, backoff=0.01, attempts=3, timeout=5.0)
        slow = OpenAIAdmin(f"{url}/v1", key, backoff=0.01, attempts=3, timeout=0.3)  # for the timeout check only
        path = f"/v1/organization/projects/{DEMO_PROJECT}/service_accounts/{OTHER_ACCOUNT}"
        storm = matrix.storm_exhausts_retries(
            proxy,
            f"DELETE {path}",
            lambda: admin.delete_service_account(DEMO_PROJECT, OTHER_ACCOUNT),
            3,
            f"OpenAI Admin API delete service account on {DEMO_PROJECT}/{OTHER_ACCOUNT} failed (HTTP 500)",
        )
        assert OTHER_ACCOUNT in sandbox.openai.service_accounts[DEMO_PROJECT]  # the storm changed nothing
        matrix.times_out(proxy, f"GET {path}", lambda: slow.get_service_account(DEMO_PROJECT, OTHER_ACCOUNT), 3, 1.0)
        deleted = matrix.retry_after_then_success(
            proxy, f"DELETE {path}", lambda: admin.delete_service_account(DEMO_PROJECT, OTHER_ACCOUNT)
        )
        assert deleted is True and OTHER_ACCOUNT not in sandbox.openai.service_accounts[DEMO_PROJECT]
    matrix.secret_absent(key, caplog.text, str(storm), json.dumps(deleted))


def test_service_account_actions_through_the_registry(
    openai_env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    ctx = context(tmp_path, openai_env)
    inputs = ServiceAccount(project_id=DEMO_PROJECT, service_account_id=BOT_ACCOUNT)
    collected = REGISTRY["openai.collect_service_account_evidence"].task.fn(ctx, inputs)
    assert collected.status is Outcome.ok and collected.output["key_ids"] == ["key_bot_1", "key_bot_2"]
    [record] = ctx.store.evidence_for(ctx.incident_id)
    assert record.asset == f"openai:service-account:{DEMO_PROJECT}/{BOT_ACCOUNT}" == inputs.asset
    kept = json.loads(ctx.evidence.path_for(record.sha256).read_bytes())
    assert kept["record"]["name"] == "support-bot" and len(kept["keys"]) == 2
    assert "a" * 40 not in json.dumps(kept)  # redacted values only

    delete = REGISTRY["openai.delete_service_account"]
    assert delete.info.effect.value == "destructive" and delete.info.inverse is None
    assert delete.probe is not None and delete.probe(ctx, inputs, NOT_RUN).ok is False
    outcome = delete.task.fn(ctx, inputs)
    assert outcome.status is Outcome.ok and outcome.output["already"] is False
    probe = delete.probe(ctx, inputs, outcome)
    assert probe.ok and "nor any key it owned" in probe.detail
    assert "key_bot_1" not in sandbox.openai.projects[DEMO_PROJECT]
    again = delete.task.fn(ctx, inputs)
    assert again.status is Outcome.ok and again.output["already"] is True

    gone = REGISTRY["openai.collect_service_account_evidence"].task.fn(ctx, inputs)
    assert gone.output["found"] is False


def test_service_account_actions_in_plan_mode_and_unconfigured(
    openai_env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    inputs = ServiceAccount(project_id=DEMO_PROJECT, service_account_id=BOT_ACCOUNT)
    planned = REGISTRY["openai.delete_service_account"].task.fn(context(tmp_path, openai_env, plan_mode=True), inputs)
    assert planned.name == "Planned" and "delete service account" in planned.message
    assert BOT_ACCOUNT in sandbox.openai.service_accounts[DEMO_PROJECT]
    bare = context(tmp_path / "bare")
    for name in ("openai.collect_service_account_evidence", "openai.delete_service_account"):
        state = REGISTRY[name].task.fn(bare, inputs)
        assert state.name == "Not configured" and "AISOAR_OPENAI_URL" in state.message, name
    for bad in ["../api_keys", "svc acct", "a/b", ""]:
        with pytest.raises(ValueError):
            ServiceAccount(project_id=DEMO_PROJECT, service_account_id=bad)


# == Anthropic Admin API ==================================================================
@dataclass
class AnthropicEnv:
    state: AnthropicState
    url: str

    def messages(self, secret: str, version: str | None = "2023-06-01") -> httpx.Response:
        headers = {"x-api-key": secret} | ({"anthropic-version": version} if version else {})
        body = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
        return httpx.post(f"{self.url}/v1/messages", headers=headers, json=body)

    def admin_get(self, key_id: str, headers: dict[str, str]) -> httpx.Response:
        return httpx.get(f"{self.url}/v1/organizations/api_keys/{key_id}", headers=headers)

    @property
    def settings(self) -> dict[str, str]:
        return {"AISOAR_ANTHROPIC_URL": self.url, "AISOAR_ANTHROPIC_ADMIN_KEY": self.state.admin_key}


@pytest.fixture()
def anthropic() -> Iterator[AnthropicEnv]:
    state = AnthropicState(ADMIN_ANTHROPIC)
    state.add_key(LEAKED_ANTHROPIC, name="prod-support-bot", key_id=LEAKED_ID)
    state.add_key(OTHER_ANTHROPIC, name="batch-jobs", key_id=OTHER_ID)
    state.add_key("sk-ant-api03-sandbox-archived-0000000000000000000000003", key_id=ARCHIVED_ID, status="archived")
    server = BackgroundServer(create_app(state)).start()
    yield AnthropicEnv(state, server.url)
    server.stop()


ADMIN_HEADERS = {"x-api-key": ADMIN_ANTHROPIC, "anthropic-version": "2023-06-01"}


def test_the_anthropic_fake_checks_what_the_api_checks(anthropic: AnthropicEnv) -> None:
    ok = anthropic.admin_get(LEAKED_ID, ADMIN_HEADERS)
    assert ok.status_code == 200 and ok.headers["request-id"].startswith("req_")
    body = ok.json()
    assert set(body) >= {"id", "type", "name", "workspace_id", "created_at", "created_by", "partial_key_hint", "status"}
    assert body["type"] == "api_key" and set(body["created_by"]) == {"id", "type"}
    assert LEAKED_ANTHROPIC not in json.dumps(body)  # a hint only
    cases = [
        ({"x-api-key": ADMIN_ANTHROPIC}, 400, "invalid_request_error"),  # no version
        ({"x-api-key": ADMIN_ANTHROPIC, "anthropic-version": "2099-01-01"}, 400, "invalid_request_error"),
        ({"anthropic-version": "2023-06-01"}, 401, "authentication_error"),  # no key
        ({"x-api-key": "sk-ant-admin01-wrong", "anthropic-version": "2023-06-01"}, 401, "authentication_error"),
        ({"x-api-key": LEAKED_ANTHROPIC, "anthropic-version": "2023-06-01"}, 401, "authentication_error"),  # not admin
    ]
    for headers, status, kind in cases:
        answer = anthropic.admin_get(LEAKED_ID, headers)
        assert answer.status_code == status, headers
        assert answer.json()["type"] == "error" and answer.json()["error"]["type"] == kind
        assert answer.json()["error"]["message"]
    missing = anthropic.admin_get("apikey_01Nope", ADMIN_HEADERS)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    update = f"{anthropic.url}/v1/organizations/api_keys/{LEAKED_ID}"
    for bad in [{"status": "revoked"}, {"status": "inactive", "workspace_id": "x"}, {"name": ""}]:
        refused = httpx.post(update, headers=ADMIN_HEADERS, json=bad)
        assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_request_error", bad
    archived = httpx.post(
        f"{anthropic.url}/v1/organizations/api_keys/{ARCHIVED_ID}", headers=ADMIN_HEADERS, json={"status": "active"}
    )
    assert archived.status_code == 400
    assert anthropic.messages(LEAKED_ANTHROPIC).status_code == 200
    assert anthropic.messages(LEAKED_ANTHROPIC, version=None).status_code == 400
    assert anthropic.messages("sk-ant-api03-unknown").status_code == 401
    listed = httpx.get(f"{anthropic.url}/v1/organizations/api_keys", headers=ADMIN_HEADERS, params={"limit": 2})
    assert listed.json()["has_more"] is True and len(listed.json()["data"]) == 2


def test_deactivate_refuses_the_key_and_activate_restores_it(anthropic: AnthropicEnv) -> None:
    admin = AnthropicAdmin(anthropic.url, ADMIN_ANTHROPIC)
    record = admin.get_key(LEAKED_ID)
    assert record is not None and record["status"] == "active"
    assert admin.set_status(LEAKED_ID, "inactive")["status"] == "inactive"
    assert admin.set_status(LEAKED_ID, "inactive")["status"] == "inactive"  # twice is harmless
    refused = anthropic.messages(LEAKED_ANTHROPIC)
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    assert anthropic.messages(OTHER_ANTHROPIC).status_code == 200  # only that key
    assert admin.set_status(LEAKED_ID, "active")["status"] == "active"
    assert anthropic.messages(LEAKED_ANTHROPIC).status_code == 200
    assert admin.get_key("apikey_01Unknown") is None
    with pytest.raises(ConnectorError) as archived:
        admin.set_status(ARCHIVED_ID, "active")
    assert str(archived.value).startswith(f"Anthropic Admin API activate API key on {ARCHIVED_ID} failed (HTTP 400)")
    assert "keys visible" in admin.check()


def test_anthropic_plan_mode_changes_nothing(anthropic: AnthropicEnv) -> None:
    planner = AnthropicAdmin(anthropic.url, ADMIN_ANTHROPIC, plan=True)

    def state() -> str:
        return json.dumps(anthropic.state.keys, sort_keys=True)

    matrix.plan_changes_nothing(lambda: planner.set_status(LEAKED_ID, "inactive"), state, "deactivate API key")
    assert anthropic.messages(LEAKED_ANTHROPIC).status_code == 200


def test_anthropic_fault_matrix(anthropic: AnthropicEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with fault_proxy(anthropic.url) as (proxy, url):
        admin = AnthropicAdmin(url, ADMIN_ANTHROPIC, backoff=0.01, attempts=3, timeout=5.0)
        slow = AnthropicAdmin(url, ADMIN_ANTHROPIC, backoff=0.01, attempts=3, timeout=0.3)  # for the timeout check
        path = f"/v1/organizations/api_keys/{LEAKED_ID}"
        updated = matrix.retry_after_then_success(
            proxy, f"POST {path}", lambda: admin.set_status(LEAKED_ID, "inactive")
        )
        assert updated["status"] == "inactive" and anthropic.messages(LEAKED_ANTHROPIC).status_code == 401
        storm = matrix.storm_exhausts_retries(
            proxy,
            f"POST {path}",
            lambda: admin.set_status(LEAKED_ID, "active"),
            3,
            f"Anthropic Admin API activate API key on {LEAKED_ID} failed (HTTP 500)",
        )
        assert anthropic.state.keys[LEAKED_ID]["status"] == "inactive"  # the storm changed nothing
        matrix.times_out(proxy, f"GET {path}", lambda: slow.get_key(LEAKED_ID), 3, delay=1.0)
        sent = {(s.headers.get("x-api-key"), s.headers.get("anthropic-version")) for s in proxy.seen}
    assert sent == {(ADMIN_ANTHROPIC, "2023-06-01")}
    matrix.secret_absent(ADMIN_ANTHROPIC, caplog.text, str(storm), json.dumps(updated))
    matrix.secret_absent(LEAKED_ANTHROPIC, json.dumps(updated))


def test_anthropic_actions_through_the_registry(anthropic: AnthropicEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, anthropic.settings)
    inputs = AnthropicKey(key_id=LEAKED_ID)
    collected = REGISTRY["anthropic.collect_key_evidence"].task.fn(ctx, inputs)
    assert collected.status is Outcome.ok and collected.output["key_status"] == "active"
    [record] = ctx.store.evidence_for(ctx.incident_id)
    assert record.asset == f"anthropic:api-key:{LEAKED_ID}" == inputs.asset
    assert LEAKED_ANTHROPIC not in ctx.evidence.path_for(record.sha256).read_text()

    deactivate = REGISTRY["anthropic.deactivate_key"]
    assert deactivate.info.inverse == "anthropic.activate_key"
    assert deactivate.probe is not None and deactivate.probe(ctx, inputs, NOT_RUN).ok is False
    outcome = deactivate.task.fn(ctx, inputs)
    assert outcome.status is Outcome.ok and outcome.output == {"already": False, "previous_status": "active"}
    probe = deactivate.probe(ctx, inputs, outcome)
    assert probe.ok and "inactive" in probe.detail
    assert anthropic.messages(LEAKED_ANTHROPIC).status_code == 401  # refused at the target
    assert deactivate.task.fn(ctx, inputs).output["already"] is True  # twice is harmless

    activate = REGISTRY["anthropic.activate_key"]
    assert activate.info.inverse == "anthropic.deactivate_key"
    back = activate.task.fn(ctx, inputs)
    assert back.status is Outcome.ok and activate.probe is not None and activate.probe(ctx, inputs, back).ok
    assert anthropic.messages(LEAKED_ANTHROPIC).status_code == 200
    assert activate.task.fn(ctx, inputs).output["already"] is True


def test_anthropic_actions_on_archived_unknown_planned_and_unconfigured(
    anthropic: AnthropicEnv, tmp_path: Path
) -> None:
    ctx = context(tmp_path, anthropic.settings)
    archived = AnthropicKey(key_id=ARCHIVED_ID)
    done = REGISTRY["anthropic.deactivate_key"].task.fn(ctx, archived)
    assert done.status is Outcome.ok and done.output["already"] is True
    probe = REGISTRY["anthropic.deactivate_key"].probe
    assert probe is not None and probe(ctx, archived, done).ok
    with pytest.raises(ConnectorError, match="archived"):
        REGISTRY["anthropic.activate_key"].task.fn(ctx, archived)
    unknown = REGISTRY["anthropic.deactivate_key"].task.fn(ctx, AnthropicKey(key_id="apikey_01Unknown"))
    assert unknown.name == "No such asset" and "no key" in unknown.message

    planned = REGISTRY["anthropic.deactivate_key"].task.fn(
        context(tmp_path / "plan", anthropic.settings, plan_mode=True), AnthropicKey(key_id=LEAKED_ID)
    )
    assert planned.name == "Planned" and "deactivate API key" in planned.message
    assert anthropic.state.keys[LEAKED_ID]["status"] == "active"

    bare = context(tmp_path / "bare")
    for name in ("anthropic.collect_key_evidence", "anthropic.deactivate_key", "anthropic.activate_key"):
        state = REGISTRY[name].task.fn(bare, AnthropicKey(key_id=LEAKED_ID))
        assert state.name == "Not configured" and "AISOAR_ANTHROPIC_ADMIN_KEY" in state.message, name
    for bad in ["../api_keys", "apikey_01 x", "sk-ant-api03-x", "apikey_" + "a" * 65]:
        with pytest.raises(ValueError):
            AnthropicKey(key_id=bad)
