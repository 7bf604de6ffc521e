"""The Slack stand-in drives button clicks the way Slack does: a signed ``block_actions``
payload POSTed form-encoded to the app's Request URL, checked here by a real app on another
loopback port with slack-sdk's own ``SignatureVerifier``. Plus the methods the approval
buttons need: users.info, users.lookupByEmail, conversations.open (DMs), chat.postEphemeral,
and the payload's response_url."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import Clock, SignatureVerifier

from sandbox.serving import BackgroundServer
from sandbox.slack import INTERACTIVITY_TIMEOUT, sign
from sandbox.stack import SANDBOX_PEOPLE, SLACK_CHANNEL, SLACK_INTERACTIVITY_PATH, Sandbox

CHANNEL_ID = "C0AISOAR01"


def approval_blocks(approval_id: str = "apr-1") -> list[dict[str, Any]]:
    """Approval buttons as tasks/slack.py builds them."""
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": "Delete key `key_sandbox_leaked`?"}},
        {
            "type": "actions",
            "block_id": f"approval:{approval_id}",
            "elements": [
                {
                    "type": "button",
                    "action_id": "aisoar_approve",
                    "text": {"type": "plain_text", "text": "Approve"},
                    "style": "primary",
                    "value": approval_id,
                },
                {
                    "type": "button",
                    "action_id": "aisoar_reject",
                    "text": {"type": "plain_text", "text": "Reject"},
                    "style": "danger",
                    "value": approval_id,
                },
            ],
        },
    ]


@dataclass
class Receiver:
    """The app's side: a real server on loopback that verifies each delivery like aisoar must."""

    signing_secret: str
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    delay: float = 0.0  # how long the app takes to answer
    server: BackgroundServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url + SLACK_INTERACTIVITY_PATH

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post(SLACK_INTERACTIVITY_PATH)
        async def interactivity(request: Request) -> JSONResponse:
            raw = await request.body()
            valid = SignatureVerifier(self.signing_secret).is_valid_request(raw, dict(request.headers))
            form = parse_qs(raw.decode())
            self.deliveries.append(
                {
                    "valid": valid,
                    "raw": raw,
                    "headers": dict(request.headers),
                    "payload": json.loads(form["payload"][0]) if "payload" in form else None,
                }
            )
            if self.delay:
                await asyncio.sleep(self.delay)
            return JSONResponse({}, status_code=200 if valid else 401)

        return app


@pytest.fixture()
def env(sandbox: Sandbox) -> dict[str, str]:
    return sandbox.start(("slack",))


@pytest.fixture()
def base(env: dict[str, str]) -> str:
    return env["AISOAR_SLACK_BASE_URL"].removesuffix("/api/")


@pytest.fixture()
def client(env: dict[str, str]) -> WebClient:
    return WebClient(token=env["AISOAR_SLACK_TOKEN"], base_url=env["AISOAR_SLACK_BASE_URL"])


@pytest.fixture()
def receiver(sandbox: Sandbox, env: dict[str, str]) -> Iterator[Receiver]:
    """The app, told the signing secret through the setting the sandbox writes, and the
    stand-in pointed at it (as a test does once the app has its port)."""
    app = Receiver(signing_secret=env["AISOAR_SLACK_SIGNING_SECRET"])
    app.server = BackgroundServer(app.app()).start()
    sandbox.set_slack_request_url(app.url)
    yield app
    app.server.stop()


def post_request(client: WebClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """An incident parent and, in its thread, the approval request with buttons."""
    parent = client.chat_postMessage(channel=SLACK_CHANNEL, text="incident")
    request = client.chat_postMessage(
        channel=SLACK_CHANNEL, text="approval needed", blocks=approval_blocks(), thread_ts=parent["ts"]
    )
    return parent.data, request.data  # type: ignore[return-value]


def click(base: str, user: str, channel: str, message_ts: str, action_id: str) -> httpx.Response:
    spec = {"user": user, "channel": channel, "message_ts": message_ts, "action_id": action_id}
    return httpx.post(f"{base}/_sandbox/click", json=spec, timeout=10)


# -- signing ---------------------------------------------------------------------------
def test_the_stand_ins_signature_is_the_one_slack_sdk_verifies() -> None:
    secret, body = "8f742231b10e8888abcd99yyyzzz85a5", 'payload={"type":"block_actions"}'
    now = int(time.time())
    verifier = SignatureVerifier(secret)
    signature = sign(secret, now, body)
    assert signature == verifier.generate_signature(timestamp=str(now), body=body)
    assert sign(secret, str(now), body.encode()) == signature  # str and bytes bodies sign alike
    assert verifier.is_valid(body, str(now), signature)
    assert not verifier.is_valid(body.replace("block_actions", "view_submission"), str(now), signature)
    assert not SignatureVerifier("another-secret").is_valid(body, str(now), signature)
    old = now - 301  # Slack's window is 5 minutes
    assert not verifier.is_valid(body, str(old), sign(secret, old, body))
    assert verifier.is_valid(body, str(now - 290), sign(secret, now - 290, body))


def test_the_sandbox_env_carries_the_signing_secret_and_the_people(
    sandbox: Sandbox, env: dict[str, str], base: str
) -> None:
    assert env["AISOAR_SLACK_SIGNING_SECRET"] == sandbox.slack.signing_secret
    assert len(sandbox.slack.signing_secret) == 32
    assert {p.id for p in SANDBOX_PEOPLE} <= set(sandbox.slack.users)
    assert sandbox.slack.request_url is None  # set later, once the app has its port
    sandbox.set_slack_request_url("http://127.0.0.1:9/slack/interactivity")
    assert httpx.get(f"{base}/_sandbox/interactivity").json() == {
        "request_url": "http://127.0.0.1:9/slack/interactivity"
    }


# -- clicks ----------------------------------------------------------------------------
def test_a_click_is_delivered_signed_form_encoded_and_shaped_like_slacks(
    sandbox: Sandbox, client: WebClient, base: str, receiver: Receiver
) -> None:
    parent, request = post_request(client)
    configured = httpx.post(f"{base}/_sandbox/interactivity", json={"request_url": receiver.url})
    assert configured.json() == {"request_url": receiver.url}

    answer = click(base, "U0ALICE", CHANNEL_ID, request["ts"], "aisoar_approve")

    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["outcome"] == "ok" and result["status"] == 200
    [delivery] = receiver.deliveries
    assert delivery["valid"] is True
    assert delivery["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert delivery["raw"].decode() == result["sent"]["body"]  # the exact bytes, for replays
    timestamp = delivery["headers"]["x-slack-request-timestamp"]
    assert abs(int(timestamp) - time.time()) < 10
    assert delivery["headers"]["x-slack-signature"] == sign(sandbox.slack.signing_secret, timestamp, delivery["raw"])

    payload = delivery["payload"]
    assert set(payload) == {
        "type",
        "user",
        "api_app_id",
        "token",
        "container",
        "trigger_id",
        "team",
        "enterprise",
        "is_enterprise_install",
        "channel",
        "message",
        "state",
        "response_url",
        "actions",
    }
    assert payload["type"] == "block_actions"
    assert payload["user"] == {"id": "U0ALICE", "username": "alice", "name": "alice", "team_id": "T0SANDBOX"}
    assert payload["token"] == sandbox.slack.verification_token
    assert payload["container"] == {
        "type": "message",
        "message_ts": request["ts"],
        "channel_id": CHANNEL_ID,
        "is_ephemeral": False,
        "thread_ts": parent["ts"],
    }
    assert payload["team"] == {"id": "T0SANDBOX", "domain": "sandbox"}
    assert payload["enterprise"] is None and payload["is_enterprise_install"] is False
    assert payload["channel"] == {"id": CHANNEL_ID, "name": SLACK_CHANNEL}
    assert payload["message"]["ts"] == request["ts"] and payload["message"]["thread_ts"] == parent["ts"]
    assert payload["message"]["blocks"][1]["elements"][0]["action_id"] == "aisoar_approve"
    assert payload["message"]["bot_id"] == "B0AISOAR" and "channel" not in payload["message"]
    assert payload["state"] == {"values": {}}
    assert payload["response_url"].startswith(f"{base}/_sandbox/response/")
    assert len(payload["trigger_id"].split(".")) == 3
    [action] = payload["actions"]
    action_ts = action.pop("action_ts")
    assert float(action_ts) == pytest.approx(time.time(), abs=10)
    assert action == {
        "action_id": "aisoar_approve",
        "block_id": "approval:apr-1",
        "text": {"type": "plain_text", "text": "Approve", "emoji": True},
        "value": "apr-1",
        "style": "primary",
        "type": "button",
    }
    recorded = httpx.get(f"{base}/_sandbox/interactions").json()
    assert [r["payload"]["actions"][0]["action_id"] for r in recorded] == ["aisoar_approve"]
    assert recorded[0]["sent"]["headers"]["X-Slack-Signature"] == delivery["headers"]["x-slack-signature"]


def test_a_button_that_is_not_there_cannot_be_clicked(
    sandbox: Sandbox, client: WebClient, base: str, receiver: Receiver
) -> None:
    _, request = post_request(client)
    refused = {
        "no such action": (("U0ALICE", CHANNEL_ID, request["ts"], "aisoar_escalate"), 404, "action_not_found"),
        "no such message": (("U0ALICE", CHANNEL_ID, "1.000001", "aisoar_approve"), 404, "message_not_found"),
        "other channel": (("U0ALICE", "C0ELSEWHERE", request["ts"], "aisoar_approve"), 404, "channel_not_found"),
        "not in the directory": (("U0EVE", CHANNEL_ID, request["ts"], "aisoar_approve"), 404, "user_not_found"),
        "the bot itself": (("U0AISOAR", CHANNEL_ID, request["ts"], "aisoar_approve"), 400, "user_is_bot"),
    }
    for case, (args, status, error) in refused.items():
        answer = click(base, *args)
        assert (answer.status_code, answer.json()["error"]) == (status, error), case
    # once the request is closed (buttons gone), its old button is gone too
    client.chat_update(channel=CHANNEL_ID, ts=request["ts"], text="approved", blocks=approval_blocks()[:1])
    gone = click(base, "U0ALICE", CHANNEL_ID, request["ts"], "aisoar_approve")
    assert gone.status_code == 404 and gone.json()["error"] == "action_not_found"
    assert receiver.deliveries == [] and sandbox.slack.interactions == []


def test_without_a_request_url_there_is_nowhere_to_deliver(sandbox: Sandbox, client: WebClient, base: str) -> None:
    _, request = post_request(client)
    answer = click(base, "U0ALICE", CHANNEL_ID, request["ts"], "aisoar_approve")
    assert answer.status_code == 409 and answer.json()["error"] == "no_request_url"
    bad = httpx.post(f"{base}/_sandbox/interactivity", json={"request_url": "file:///etc/passwd"})
    assert bad.status_code == 400 and sandbox.slack.request_url is None


def test_a_replayed_delivery_still_verifies_within_five_minutes(
    client: WebClient, base: str, receiver: Receiver
) -> None:
    """Slack's signature does not stop replays inside its window: the app has to."""
    _, request = post_request(client)
    sent = click(base, "U0ALICE", CHANNEL_ID, request["ts"], "aisoar_approve").json()["sent"]

    replayed = httpx.post(receiver.url, content=sent["body"], headers=sent["headers"])

    assert replayed.status_code == 200
    first, second = receiver.deliveries
    assert first["valid"] and second["valid"] and first["raw"] == second["raw"]
    assert first["payload"]["trigger_id"] == second["payload"]["trigger_id"]  # what an app can dedupe on
    assert first["payload"]["actions"][0]["action_ts"] == second["payload"]["actions"][0]["action_ts"]

    class Later(Clock):
        def now(self) -> float:
            return time.time() + 301

    timestamp = sent["headers"]["X-Slack-Request-Timestamp"]
    signature = sent["headers"]["X-Slack-Signature"]
    verifier = SignatureVerifier(receiver.signing_secret, clock=Later())
    assert not verifier.is_valid(sent["body"], timestamp, signature)


def test_a_forged_click_fails_verification(client: WebClient, base: str, receiver: Receiver) -> None:
    """Mallory clicks, then rewrites the body to say Alice clicked: the signature no longer fits."""
    _, request = post_request(client)
    sent = click(base, "U0MALLORY", CHANNEL_ID, request["ts"], "aisoar_approve").json()["sent"]
    assert "U0MALLORY" in sent["body"]

    forged_body = sent["body"].replace("U0MALLORY", "U0ALICE").replace("mallory", "alice")
    forged = httpx.post(receiver.url, content=forged_body, headers=sent["headers"])
    wrong_key = {
        **sent["headers"],
        "X-Slack-Signature": sign("not-the-secret", sent["headers"]["X-Slack-Request-Timestamp"], sent["body"]),
    }
    guessed = httpx.post(receiver.url, content=sent["body"], headers=wrong_key)

    assert forged.status_code == 401 and guessed.status_code == 401
    assert [d["valid"] for d in receiver.deliveries] == [True, False, False]
    assert receiver.deliveries[1]["payload"]["user"]["id"] == "U0ALICE"  # what the forger wanted counted


def test_an_app_that_answers_late_is_given_up_on_after_three_seconds(
    sandbox: Sandbox, client: WebClient, base: str, receiver: Receiver
) -> None:
    assert sandbox.slack.interactivity_timeout == INTERACTIVITY_TIMEOUT == 3.0
    _, request = post_request(client)
    receiver.delay = 4.0
    started = time.monotonic()
    result = click(base, "U0ALICE", CHANNEL_ID, request["ts"], "aisoar_approve").json()
    took = time.monotonic() - started
    assert result["outcome"] == "timeout" and result["status"] is None
    assert 2.9 < took < 3.9
    assert len(receiver.deliveries) == 1  # delivered once; Slack does not retry a click


def test_an_app_that_refuses_is_recorded_as_an_error(sandbox: Sandbox, client: WebClient, base: str) -> None:
    app = Receiver(signing_secret="a-different-secret")  # misconfigured: every click fails verification
    app.server = BackgroundServer(app.app()).start()
    try:
        sandbox.set_slack_request_url(app.url)
        _, request = post_request(client)
        result = click(base, "U0BOB", CHANNEL_ID, request["ts"], "aisoar_reject").json()
    finally:
        app.server.stop()
    assert (result["outcome"], result["status"]) == ("error_status", 401)
    assert [i["outcome"] for i in httpx.get(f"{base}/_sandbox/interactions").json()] == ["error_status"]


# -- response_url ----------------------------------------------------------------------
def test_response_url_replaces_the_clicked_message_and_answers_the_clicker(
    sandbox: Sandbox, client: WebClient, base: str, receiver: Receiver
) -> None:
    parent, request = post_request(client)
    response_url = click(base, "U0ALICE", CHANNEL_ID, request["ts"], "aisoar_approve").json()["response_url"]
    closed = [{"type": "section", "text": {"type": "mrkdwn", "text": "Approved by <@U0ALICE>"}}]

    replaced = httpx.post(response_url, json={"replace_original": True, "text": "Approved", "blocks": closed})
    told = httpx.post(response_url, json={"response_type": "ephemeral", "text": "Your approval counted."})

    assert replaced.status_code == 200 and replaced.json() == {"ok": True}
    assert told.status_code == 200
    thread = client.conversations_replies(channel=CHANNEL_ID, ts=parent["ts"])["messages"]
    assert [m["text"] for m in thread] == ["incident", "Approved"]
    assert thread[1]["blocks"][0]["text"]["text"] == "Approved by <@U0ALICE>" and len(thread[1]["blocks"]) == 1
    assert sandbox.slack.updates[-1]["via"] == "response_url" and sandbox.slack.updates[-1]["ts"] == request["ts"]
    [private] = httpx.get(f"{base}/_sandbox/ephemeral", params={"user": "U0ALICE"}).json()
    assert private["text"] == "Your approval counted." and private["channel"] == CHANNEL_ID
    assert private["thread_ts"] == parent["ts"] and private["via"] == "response_url"
    # the buttons are gone, so they cannot be clicked again
    assert click(base, "U0BOB", CHANNEL_ID, request["ts"], "aisoar_approve").status_code == 404
    invalid = httpx.post(response_url, json={"replace_original": True, "blocks": [{"type": "nonsense"}]})
    assert invalid.status_code == 400 and invalid.json()["error"] == "invalid_blocks"


def test_response_url_works_five_times_for_thirty_minutes(
    sandbox: Sandbox, client: WebClient, base: str, receiver: Receiver
) -> None:
    _, request = post_request(client)
    first = click(base, "U0ALICE", CHANNEL_ID, request["ts"], "aisoar_approve").json()["response_url"]
    statuses = [httpx.post(first, json={"text": f"note {i}"}).status_code for i in range(6)]
    assert statuses == [200] * 5 + [404]
    assert httpx.post(first, json={"text": "x"}).json()["error"] == "used_url"

    second = click(base, "U0BOB", CHANNEL_ID, request["ts"], "aisoar_reject").json()["response_url"]
    token = second.rsplit("/", 1)[1]
    sandbox.slack.response_urls[token]["created"] -= 30 * 60 + 1
    expired = httpx.post(second, json={"text": "too late"})
    assert expired.status_code == 404 and expired.json()["error"] == "expired_url"
    unknown = httpx.post(f"{base}/_sandbox/response/not-a-token", json={"text": "x"})
    assert unknown.status_code == 404 and unknown.json()["error"] == "expired_url"
    assert len(sandbox.slack.ephemeral) == 5


# -- people, DMs, ephemeral messages ---------------------------------------------------
def test_users_are_found_by_id_and_by_email(env: dict[str, str], client: WebClient) -> None:
    alice = client.users_lookupByEmail(email="Alice@Example.com")["user"]
    assert (alice["id"], alice["name"], alice["real_name"]) == ("U0ALICE", "alice", "Alice Ng")
    assert alice["profile"]["email"] == "alice@example.com" and alice["team_id"] == "T0SANDBOX"
    bob = client.users_info(user="U0BOB")["user"]
    assert bob["name"] == "bob" and bob["profile"]["email"] == "bob@example.com" and bob["is_bot"] is False
    for call, error in (
        (lambda: client.users_lookupByEmail(email="eve@example.com"), "users_not_found"),
        (lambda: client.users_info(user="U0EVE"), "user_not_found"),
        (
            lambda: WebClient(token="xoxb-wrong", base_url=env["AISOAR_SLACK_BASE_URL"]).users_info(user="U0BOB"),
            "invalid_auth",
        ),
    ):
        with pytest.raises(SlackApiError) as caught:
            call()
        assert caught.value.response["error"] == error


def test_a_dm_goes_through_conversations_open(
    sandbox: Sandbox, client: WebClient, base: str, receiver: Receiver
) -> None:
    opened = client.conversations_open(users="U0ALICE")
    dm = opened["channel"]["id"]
    assert dm.startswith("D") and "already_open" not in opened.data
    again = client.conversations_open(users=["U0ALICE"])
    assert again["channel"]["id"] == dm and again["already_open"] is True
    assert client.conversations_open(users="U0BOB")["channel"]["id"] != dm

    posted = client.chat_postMessage(channel=dm, text="Your code: 123456", blocks=approval_blocks("apr-dm"))

    assert posted["channel"] == dm
    [to_alice] = httpx.get(f"{base}/_sandbox/dms", params={"user": "U0ALICE"}).json()
    assert to_alice["to"] == "U0ALICE" and to_alice["text"] == "Your code: 123456"
    assert httpx.get(f"{base}/_sandbox/dms", params={"user": "U0BOB"}).json() == []
    assert sandbox.slack.messages == []  # a DM is not a channel message
    # a button in a DM is clicked in a channel named "directmessage"
    result = click(base, "U0ALICE", dm, posted["ts"], "aisoar_approve").json()
    assert result["outcome"] == "ok" and receiver.deliveries[0]["payload"]["channel"] == {
        "id": dm,
        "name": "directmessage",
    }
    for call, error in (
        (lambda: client.conversations_open(users="U0EVE"), "user_not_found"),
        (lambda: client.chat_postMessage(channel="D0NOTOPEN", text="x"), "channel_not_found"),
    ):
        with pytest.raises(SlackApiError) as caught:
            call()
        assert caught.value.response["error"] == error


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")
def test_an_ephemeral_message_is_for_one_person(sandbox: Sandbox, client: WebClient, base: str) -> None:
    parent = client.chat_postMessage(channel=SLACK_CHANNEL, text="incident")
    answer = client.chat_postEphemeral(
        channel=SLACK_CHANNEL, user="U0MALLORY", text="You are not an approver.", thread_ts=parent["ts"]
    )
    assert answer["ok"] is True and answer["message_ts"]
    [shown] = httpx.get(f"{base}/_sandbox/ephemeral", params={"user": "U0MALLORY"}).json()
    assert (shown["channel"], shown["text"], shown["thread_ts"]) == (
        CHANNEL_ID,
        "You are not an approver.",
        parent["ts"],
    )
    assert shown["message_ts"] == answer["message_ts"] and shown["via"] == "chat.postEphemeral"
    assert httpx.get(f"{base}/_sandbox/ephemeral", params={"user": "U0ALICE"}).json() == []
    assert [m["text"] for m in sandbox.slack.messages] == ["incident"] and sandbox.slack.replies == []
    for kwargs, error in (
        ({"channel": "nowhere", "user": "U0ALICE", "text": "x"}, "channel_not_found"),
        ({"channel": SLACK_CHANNEL, "user": "U0EVE", "text": "x"}, "user_not_in_channel"),  # not in the workspace
        ({"channel": SLACK_CHANNEL, "user": "U0ALICE"}, "no_text"),
        (
            {
                "channel": SLACK_CHANNEL,
                "user": "U0ALICE",
                "blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}],
            },
            "invalid_blocks",
        ),
    ):
        with pytest.raises(SlackApiError) as caught:
            client.chat_postEphemeral(**kwargs)
        assert caught.value.response["error"] == error


def test_blocks_are_stored_with_ids_and_duplicate_action_ids_are_refused(client: WebClient) -> None:
    posted = client.chat_postMessage(
        channel=SLACK_CHANNEL,
        text="x",
        blocks=[
            {"type": "section", "text": {"type": "mrkdwn", "text": "a"}},
            {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Go"}}]},
        ],
    )
    blocks = posted["message"]["blocks"]
    assert all(b.get("block_id") for b in blocks) and blocks[0]["block_id"] != blocks[1]["block_id"]
    assert blocks[1]["elements"][0]["action_id"]
    doubled = approval_blocks()
    doubled[1]["elements"][1]["action_id"] = "aisoar_approve"
    for blocks_, problem in (
        (doubled, "already used"),
        ([approval_blocks()[1], approval_blocks()[1]], "used twice"),
        ([{**approval_blocks()[1], "elements": [{**approval_blocks()[1]["elements"][0], "style": "green"}]}], "style"),
    ):
        with pytest.raises(SlackApiError) as caught:
            client.chat_postMessage(channel=SLACK_CHANNEL, text="x", blocks=blocks_)
        assert caught.value.response["error"] == "invalid_blocks" and problem in caught.value.response["errors"][0]


def test_history_shows_message_metadata_only_when_asked_and_takes_only_a_channel_id(client: WebClient) -> None:
    """What slack_sdk sends and reads: chat.postMessage's ``metadata`` checked and kept;
    conversations.history newest first, after ``oldest``, metadata with include_all_metadata."""
    from slack_sdk.errors import SlackApiError

    metadata = {"event_type": "aisoar_incident", "event_payload": {"incident_id": "INC-1"}}
    first = client.chat_postMessage(channel=SLACK_CHANNEL, text="one", metadata=metadata)
    second = client.chat_postMessage(channel=SLACK_CHANNEL, text="two")
    channel = str(first["channel"])
    found = client.conversations_history(channel=channel, include_all_metadata=True, oldest="0")
    assert [m["text"] for m in found["messages"]] == ["two", "one"]
    assert found["messages"][1]["metadata"] == metadata
    plain = client.conversations_history(channel=channel)
    assert all("metadata" not in m for m in plain["messages"])
    later = client.conversations_history(channel=channel, oldest=str(first["ts"]), include_all_metadata=True)
    assert [m["ts"] for m in later["messages"]] == [second["ts"]]
    with pytest.raises(SlackApiError) as refused:
        client.conversations_history(channel=SLACK_CHANNEL)  # a name: Slack wants the id
    assert refused.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as bad:
        client.chat_postMessage(channel=SLACK_CHANNEL, text="x", metadata={"event_type": "no spaces allowed"})
    assert bad.value.response["error"] in {"invalid_metadata_format", "invalid_metadata_schema"}
