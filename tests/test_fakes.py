"""The sandbox stand-ins behave like the real services: checked with the real client
libraries (slack-sdk, jira, openai) and against LiteLLM's own OpenAPI document."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from jira import JIRA, JIRAError
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from sandbox.stack import DEMO_KEY_ID, DEMO_PROJECT, DEMO_SECRET, Sandbox

OPENAPI = json.loads((Path(__file__).parent / "fixtures/litellm-key-api.openapi.json").read_text())


@pytest.fixture()
def env(sandbox: Sandbox) -> Iterator[dict[str, str]]:
    yield sandbox.start()


def schema_validator(ref: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(
        "urn:litellm",
        Resource.from_contents(
            {"components": OPENAPI["components"], "$schema": "https://json-schema.org/draft/2020-12/schema"}
        ),
    )
    return Draft202012Validator({"$ref": f"urn:litellm#/components/schemas/{ref}"}, registry=registry)


def response_schema(path: str, method: str, status: str = "200") -> dict[str, Any]:
    content = OPENAPI["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    result: dict[str, Any] = json.loads(json.dumps(content).replace("#/components", "urn:litellm#/components"))
    return result


# -- LiteLLM ------------------------------------------------------------------------
def test_litellm_fake_serves_only_documented_operations() -> None:
    from sandbox.litellm import LiteLLMState, create_app

    routes = {
        (method.lower(), route.path)
        for route in create_app(LiteLLMState("m")).routes
        for method in getattr(route, "methods", set())
        if route.path.startswith("/key/")
    }
    documented = {(method, path) for path, ops in OPENAPI["paths"].items() for method in ops}
    assert routes and routes <= documented


def test_litellm_block_answers_in_the_documented_shape(env: dict[str, str]) -> None:
    url, master = env["AISOAR_LITELLM_URL"], env["AISOAR_LITELLM_MASTER_KEY"]
    key_hash = hashlib.sha256(DEMO_SECRET.encode()).hexdigest()
    body = {"key": key_hash}
    schema_validator("BlockKeyRequest").validate(body)
    response = httpx.post(f"{url}/key/block", json=body, headers={"Authorization": f"Bearer {master}"})
    assert response.status_code == 200
    registry: Registry[Any] = Registry().with_resource(
        "urn:litellm",
        Resource.from_contents(
            {"components": OPENAPI["components"], "$schema": "https://json-schema.org/draft/2020-12/schema"}
        ),
    )
    Draft202012Validator(response_schema("/key/block", "post"), registry=registry).validate(response.json())
    assert response.json()["blocked"] is True


def test_litellm_rejects_what_the_proxy_rejects(env: dict[str, str]) -> None:
    url, master = env["AISOAR_LITELLM_URL"], env["AISOAR_LITELLM_MASTER_KEY"]
    assert httpx.post(f"{url}/key/block", json={"key": "x"}).status_code == 401
    assert (
        httpx.post(f"{url}/key/block", json={"key": "x"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    )
    missing = httpx.post(f"{url}/key/block", json={}, headers={"Authorization": f"Bearer {master}"})
    assert missing.status_code == 422
    registry: Registry[Any] = Registry().with_resource(
        "urn:litellm",
        Resource.from_contents(
            {"components": OPENAPI["components"], "$schema": "https://json-schema.org/draft/2020-12/schema"}
        ),
    )
    Draft202012Validator({"$ref": "urn:litellm#/components/schemas/HTTPValidationError"}, registry=registry).validate(
        missing.json()
    )
    # The admin key may also come in the documented x-litellm-api-key header.
    info = httpx.get(f"{url}/key/info", params={"key": DEMO_SECRET}, headers={"x-litellm-api-key": master})
    assert info.status_code == 200 and info.json()["info"]["spend"] == 1873.42


def test_litellm_errors_have_the_proxy_shape_and_a_deleted_key_is_gone(env: dict[str, str]) -> None:
    """The proxy answers errors as ProxyException ``{"error": {...}}``; after ``/key/delete`` the
    key's row is gone, so ``/key/info`` and ``/key/block`` answer 404 like for a key never made."""
    url, master = env["AISOAR_LITELLM_URL"], env["AISOAR_LITELLM_MASTER_KEY"]
    headers = {"Authorization": f"Bearer {master}"}
    for sent in ({}, {"Authorization": "Bearer sk-wrong"}):
        refused = httpx.get(f"{url}/key/info", params={"key": DEMO_SECRET}, headers=sent)
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "auth_error" and refused.json()["error"]["code"] == "401"
    key_hash = hashlib.sha256(DEMO_SECRET.encode()).hexdigest()
    deleted = httpx.post(f"{url}/key/delete", json={"keys": [key_hash]}, headers=headers)
    assert deleted.status_code == 200 and deleted.json() == {"deleted_keys": [key_hash]}
    for gone in (
        httpx.get(f"{url}/key/info", params={"key": key_hash}, headers=headers),
        httpx.post(f"{url}/key/block", json={"key": key_hash}, headers=headers),
        httpx.post(f"{url}/key/update", json={"key": key_hash, "rpm_limit": 1}, headers=headers),
    ):
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "404", gone.text
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    refused = httpx.post(f"{url}/chat/completions", headers={"Authorization": f"Bearer {DEMO_SECRET}"}, json=chat)
    assert refused.status_code == 401  # a deleted key no longer works for inference


def test_litellm_blocked_key_is_refused_for_inference(env: dict[str, str]) -> None:
    url, master = env["AISOAR_LITELLM_URL"], env["AISOAR_LITELLM_MASTER_KEY"]
    chat = f"{url}/chat/completions"
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(chat, headers={"Authorization": f"Bearer {DEMO_SECRET}"}, json=body).status_code == 200
    httpx.post(f"{url}/key/block", json={"key": DEMO_SECRET}, headers={"Authorization": f"Bearer {master}"})
    assert httpx.post(chat, headers={"Authorization": f"Bearer {DEMO_SECRET}"}, json=body).status_code == 401
    assert httpx.post(chat, headers={"Authorization": f"Bearer {DEMO_SECRET}"}, json={}).status_code == 401
    httpx.post(f"{url}/key/unblock", json={"key": DEMO_SECRET}, headers={"Authorization": f"Bearer {master}"})
    assert httpx.post(chat, headers={"Authorization": f"Bearer {DEMO_SECRET}"}, json=body).status_code == 200
    # Like the proxy: a request without a model, or for a model the key may not use, is refused.
    assert httpx.post(chat, headers={"Authorization": f"Bearer {DEMO_SECRET}"}, json={}).status_code == 400
    other = httpx.post(chat, headers={"Authorization": f"Bearer {DEMO_SECRET}"}, json=body | {"model": "o3"})
    assert other.status_code == 401 and other.json()["error"]["type"] == "key_model_access_denied"


def litellm_registry() -> Registry[Any]:
    return Registry().with_resource(
        "urn:litellm",
        Resource.from_contents(
            {"components": OPENAPI["components"], "$schema": "https://json-schema.org/draft/2020-12/schema"}
        ),
    )


def test_litellm_update_info_and_list_answer_in_the_documented_shape(env: dict[str, str]) -> None:
    url, master = env["AISOAR_LITELLM_URL"], env["AISOAR_LITELLM_MASTER_KEY"]
    headers = {"Authorization": f"Bearer {master}"}
    key_hash = hashlib.sha256(DEMO_SECRET.encode()).hexdigest()
    body = {
        "key": key_hash,
        "rpm_limit": 10,
        "tpm_limit": 20000,
        "max_budget": 2500.0,
        "aliases": {"gpt-4o": "gpt-4o-2024-08-06"},
    }
    schema_validator("UpdateKeyRequest").validate(body)
    updated = httpx.post(f"{url}/key/update", json=body, headers=headers)
    assert updated.status_code == 200 and updated.json()["rpm_limit"] == 10
    info = httpx.get(f"{url}/key/info", params={"key": key_hash}, headers=headers).json()["info"]
    schema_validator("LiteLLM_VerificationToken").validate(info)
    assert (info["rpm_limit"], info["tpm_limit"], info["max_budget"]) == (10, 20000, 2500.0)
    assert info["aliases"] == {"gpt-4o": "gpt-4o-2024-08-06"} and info["models"] == ["gpt-4o"]
    listed = httpx.get(f"{url}/key/list", params={"size": 1}, headers=headers)
    Draft202012Validator(response_schema("/key/list", "get"), registry=litellm_registry()).validate(listed.json())
    assert listed.json()["keys"] == [key_hash] and listed.json()["total_count"] == 1
    wrong_type = httpx.post(f"{url}/key/update", json={"key": key_hash, "rpm_limit": "many"}, headers=headers)
    assert wrong_type.status_code == 422
    schema_validator("HTTPValidationError").validate(wrong_type.json())
    assert httpx.post(f"{url}/key/update", json={"key": "f" * 64, "rpm_limit": 1}, headers=headers).status_code == 404
    assert httpx.post(f"{url}/key/update", json={"rpm_limit": 1}, headers=headers).status_code == 400
    assert httpx.post(f"{url}/key/update", json={"key": key_hash, "rpm_limit": 1}).status_code == 401


def test_litellm_spend_logs_rows_look_like_spend_logs(env: dict[str, str]) -> None:
    url, master = env["AISOAR_LITELLM_URL"], env["AISOAR_LITELLM_MASTER_KEY"]
    key_hash = hashlib.sha256(DEMO_SECRET.encode()).hexdigest()
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "user": "u1"}
    httpx.post(f"{url}/chat/completions", headers={"Authorization": f"Bearer {DEMO_SECRET}"}, json=body)
    assert httpx.get(f"{url}/spend/logs", params={"api_key": key_hash}).status_code == 401
    rows = httpx.get(f"{url}/spend/logs", params={"api_key": key_hash}, headers={"Authorization": f"Bearer {master}"})
    [row] = rows.json()
    documented = {
        "request_id",
        "call_type",
        "api_key",
        "spend",
        "total_tokens",
        "prompt_tokens",
        "completion_tokens",
        "startTime",
        "endTime",
        "model",
        "user",
        "metadata",
        "request_tags",
    }
    assert documented <= set(row) and row["api_key"] == key_hash and row["user"] == "u1"
    assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"] and DEMO_SECRET not in rows.text


# -- OpenAI Admin API, driven by the official SDK ----------------------------------
def test_openai_fake_matches_what_the_sdk_sends(env: dict[str, str]) -> None:
    client = openai.OpenAI(
        admin_api_key=env["AISOAR_OPENAI_ADMIN_KEY"],
        api_key="unused",
        base_url=env["AISOAR_OPENAI_URL"],
        max_retries=0,
    )
    keys = client.admin.organization.projects.api_keys
    listed = keys.list(DEMO_PROJECT)
    assert [k.id for k in listed.data] == [DEMO_KEY_ID]
    assert keys.retrieve(DEMO_KEY_ID, project_id=DEMO_PROJECT).redacted_value.startswith("sk-proj-")
    deleted = keys.delete(DEMO_KEY_ID, project_id=DEMO_PROJECT)
    assert deleted.deleted is True and deleted.id == DEMO_KEY_ID
    assert deleted.object == "organization.project.api_key.deleted"
    with pytest.raises(openai.NotFoundError):
        keys.retrieve(DEMO_KEY_ID, project_id=DEMO_PROJECT)


def test_openai_fake_service_accounts_with_the_sdk(env: dict[str, str], sandbox: Sandbox) -> None:
    account_id = sandbox.openai.add_service_account(DEMO_PROJECT, "support-bot", "svc_acct_support_bot")
    sandbox.openai.add_key(DEMO_PROJECT, "sk-proj-SDK" + "d" * 40, key_id="key_sdk", service_account_id=account_id)
    client = openai.OpenAI(
        admin_api_key=env["AISOAR_OPENAI_ADMIN_KEY"],
        api_key="unused",
        base_url=env["AISOAR_OPENAI_URL"],
        max_retries=0,
    )
    accounts = client.admin.organization.projects.service_accounts
    assert account_id in [a.id for a in accounts.list(DEMO_PROJECT, limit=1)]  # the SDK follows the cursor
    account = accounts.retrieve(account_id, project_id=DEMO_PROJECT)
    assert account.name == "support-bot" and account.role == "member"
    keys = client.admin.organization.projects.api_keys
    owner = keys.retrieve("key_sdk", project_id=DEMO_PROJECT).owner
    assert owner is not None and owner.service_account is not None and owner.service_account.id == account_id
    deleted = accounts.delete(account_id, project_id=DEMO_PROJECT)
    assert deleted.deleted is True and deleted.id == account_id
    assert deleted.object == "organization.project.service_account.deleted"
    with pytest.raises(openai.NotFoundError):
        accounts.retrieve(account_id, project_id=DEMO_PROJECT)
    with pytest.raises(openai.NotFoundError):
        keys.retrieve("key_sdk", project_id=DEMO_PROJECT)  # its key went with it
    assert [k.id for k in keys.list(DEMO_PROJECT)] == [DEMO_KEY_ID]  # another account's key stays


def test_openai_fake_requires_the_admin_key(env: dict[str, str]) -> None:
    client = openai.OpenAI(
        admin_api_key="sk-admin-wrong", api_key="unused", base_url=env["AISOAR_OPENAI_URL"], max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        client.admin.organization.projects.api_keys.list(DEMO_PROJECT)


# -- Slack, driven by slack-sdk ------------------------------------------------------
def test_slack_fake_with_slack_sdk(env: dict[str, str]) -> None:
    client = WebClient(token=env["AISOAR_SLACK_TOKEN"], base_url=env["AISOAR_SLACK_BASE_URL"])
    assert client.auth_test()["ok"] is True
    posted = client.chat_postMessage(
        channel="ai-incidents", text="hello", blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    )
    assert posted["channel"] == "C0AISOAR01" and posted["ts"]


@pytest.mark.parametrize(
    ("token", "kwargs", "error"),
    [
        ("xoxb-wrong", {"channel": "ai-incidents", "text": "x"}, "invalid_auth"),
        (None, {"channel": "nowhere", "text": "x"}, "channel_not_found"),
        (None, {"channel": "ai-incidents"}, "no_text"),
        (
            None,
            {"channel": "ai-incidents", "blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}]},
            "invalid_blocks",
        ),
    ],
)
def test_slack_fake_errors_like_slack(
    env: dict[str, str], token: str | None, kwargs: dict[str, Any], error: str
) -> None:
    client = WebClient(token=token or env["AISOAR_SLACK_TOKEN"], base_url=env["AISOAR_SLACK_BASE_URL"])
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(**kwargs)
    assert caught.value.response["error"] == error


# -- Jira, driven by the jira package ------------------------------------------------
def test_jira_fake_with_the_jira_package(env: dict[str, str]) -> None:
    jira = JIRA(server=env["AISOAR_JIRA_URL"], basic_auth=(env["AISOAR_JIRA_USER"], env["AISOAR_JIRA_TOKEN"]))
    issue = jira.create_issue(
        fields={
            "project": {"key": "SEC"},
            "summary": "s",
            "description": "d",
            "issuetype": {"name": "Task"},
            "labels": ["aisoar"],
        }
    )
    assert issue.key == "SEC-1" and issue.fields.summary == "s"
    jira.add_comment(issue.key, "timeline entry")
    assert [i.key for i in jira.search_issues('project = "SEC" AND labels = "aisoar"')] == ["SEC-1"]


def test_jira_fake_refuses_bad_auth_and_bad_fields(env: dict[str, str]) -> None:
    with pytest.raises(JIRAError) as caught:
        JIRA(server=env["AISOAR_JIRA_URL"], basic_auth=(env["AISOAR_JIRA_USER"], "wrong"), max_retries=0)
    assert caught.value.status_code == 401
    jira = JIRA(server=env["AISOAR_JIRA_URL"], basic_auth=(env["AISOAR_JIRA_USER"], env["AISOAR_JIRA_TOKEN"]))
    with pytest.raises(JIRAError) as bad:
        jira.create_issue(fields={"project": {"key": "SEC"}, "summary": "two\nlines", "issuetype": {"name": "Task"}})
    assert bad.value.status_code == 400 and "newline" in str(bad.value.text)
    response = httpx.post(
        f"{env['AISOAR_JIRA_URL']}/rest/api/2/issue",
        json={"fields": {}},
        auth=(env["AISOAR_JIRA_USER"], env["AISOAR_JIRA_TOKEN"]),
    )
    assert response.status_code == 403  # no X-Atlassian-Token: no-check


def test_slack_fake_threads_and_updates_with_slack_sdk(env: dict[str, str]) -> None:
    client = WebClient(token=env["AISOAR_SLACK_TOKEN"], base_url=env["AISOAR_SLACK_BASE_URL"])
    parent = client.chat_postMessage(channel="ai-incidents", text="parent")
    reply = client.chat_postMessage(channel="ai-incidents", text="reply", thread_ts=parent["ts"])
    updated = client.chat_update(channel=parent["channel"], ts=parent["ts"], text="parent (closed)")
    assert updated["ts"] == parent["ts"] and updated["text"] == "parent (closed)"
    thread = client.conversations_replies(channel=parent["channel"], ts=parent["ts"])["messages"]
    assert [m["ts"] for m in thread] == [parent["ts"], reply["ts"]] and thread[0]["text"] == "parent (closed)"
    for call, error in (
        (lambda: client.chat_postMessage(channel="ai-incidents", text="x", thread_ts="1.000001"), "thread_not_found"),
        (lambda: client.chat_update(channel=parent["channel"], ts="1.000001", text="x"), "message_not_found"),
        (lambda: client.chat_update(channel="ai-incidents", ts=parent["ts"], text="x"), "channel_not_found"),
    ):
        with pytest.raises(SlackApiError) as caught:
            call()
        assert caught.value.response["error"] == error


def test_jira_fake_workflow_and_remote_links_with_the_jira_package(env: dict[str, str]) -> None:
    jira = JIRA(server=env["AISOAR_JIRA_URL"], basic_auth=(env["AISOAR_JIRA_USER"], env["AISOAR_JIRA_TOKEN"]))
    issue = jira.create_issue(fields={"project": {"key": "SEC"}, "summary": "s", "issuetype": {"name": "Task"}})
    assert {t["id"]: t["to"]["statusCategory"]["key"] for t in jira.transitions(issue.key)} == {
        "11": "indeterminate",
        "31": "done",
    }
    with pytest.raises(JIRAError) as invalid:
        jira.transition_issue(issue.key, "41")  # Reopen is not offered from To Do
    assert invalid.value.status_code == 400
    jira.transition_issue(issue.key, "11")
    jira.transition_issue(issue.key, "31")
    assert jira.issue(issue.key).fields.status.statusCategory.key == "done"
    assert [t["name"] for t in jira.transitions(issue.key)] == ["Reopen"]
    jira.add_simple_link(issue.key, {"url": "https://ui.example/run", "title": "run"})
    with pytest.raises(JIRAError) as no_title:
        jira.add_simple_link(issue.key, {"url": "https://ui.example/run"})
    assert no_title.value.status_code == 400
    assert [link.object.title for link in jira.remote_links(issue.key)] == ["run"]
    jira.add_comment(issue.key, "one")
    assert [c.body for c in jira.comments(issue.key)] == ["one"]
