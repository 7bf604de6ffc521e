"""Answering approvals in tests the ways responders do: a click in Slack (the stand-in signs
it as Slack does and posts it to the ingress), or the one-time code from the Slack DM typed
into the Prefect UI's form (the resume call the UI makes)."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from sandbox.stack import Sandbox
from tests import prefect_api

CODE = re.compile(r"\*([A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4})\*")
SLACK_ID = {
    "alice": "U0ALICE",
    "bob": "U0BOB",
    "carol": "U0CAROL",
    "dave": "U0DAVE",
    "erin": "U0ERIN",
    "mallory": "U0MALLORY",
}
APPROVE = "aisoar_approve"
REJECT = "aisoar_reject"


def code_for(sandbox: Sandbox, person: str, step_id: str, timeout: float = 10) -> str:
    """The newest one-time code ``person`` got by Slack DM for ``step_id``."""
    deadline = time.monotonic() + timeout
    while True:
        for message in reversed(sandbox.slack.dms_to(SLACK_ID[person])):
            found = CODE.search(str(message.get("text", "")))
            if found and f"`{step_id}`" in str(message.get("text", "")):
                return found.group(1)
        if time.monotonic() > deadline:
            raise AssertionError(f"{person} got no code for {step_id} by DM")
        time.sleep(0.05)


def answer_form(run_id: str, decision: str, code: str, reason: str = "") -> dict[str, Any]:
    """What the Prefect UI's form sends."""
    return prefect_api.resume(run_id, {"decision": decision, "code": code, "reason": reason})


def answer_shown_form(run_id: str, decision: str, code: str, reason: str = "") -> dict[str, Any]:
    """An answer sent once the form is there, as a responder's is. The form is stored right after
    the run is suspended (flows/approvals.py), and the UI shows it only then: an answer sent in
    between is refused ("Run input schema not found.") and sent again."""
    deadline = time.monotonic() + 15
    while True:
        answer = answer_form(run_id, decision, code, reason)
        missing = (answer.get("details") or {}).get("reason") == "Run input schema not found."
        if not missing or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


def approve_in_form(sandbox: Sandbox, run_id: str, step_id: str, person: str = "alice", reason: str = "ok") -> None:
    answer = answer_shown_form(run_id, "approve", code_for(sandbox, person, step_id), reason)
    assert answer["status"] == "ACCEPT", answer


def reject_in_form(sandbox: Sandbox, run_id: str, step_id: str, person: str = "alice", reason: str = "no") -> None:
    answer = answer_shown_form(run_id, "reject", code_for(sandbox, person, step_id), reason)
    assert answer["status"] == "ACCEPT", answer


def approval_message(sandbox: Sandbox, step_id: str, timeout: float = 10) -> dict[str, Any]:
    """The approval request for ``step_id`` in the incident's thread (the newest)."""
    deadline = time.monotonic() + timeout
    while True:
        with sandbox.slack.lock:
            found = [
                m
                for m in sandbox.slack.replies
                if any(str(b.get("block_id", "")).startswith("approval-request:") for b in m.get("blocks", []))
                and f"`{step_id}`" in str(m.get("blocks"))
            ]
        if found:
            return dict(found[-1])
        if time.monotonic() > deadline:
            raise AssertionError(f"no approval request for {step_id} in the Slack thread")
        time.sleep(0.05)


def click(sandbox: Sandbox, person: str, step_id: str, action: str = APPROVE) -> dict[str, Any]:
    """``person`` clicks a button of the step's approval request; returns the stand-in's record
    of the delivery (the app's status, and the exact request sent, for replays)."""
    message = approval_message(sandbox, step_id)
    response = httpx.post(
        f"{sandbox.servers['slack'].url}/_sandbox/click",
        json={
            "user": SLACK_ID[person],
            "channel": message["channel"],
            "message_ts": message["ts"],
            "action_id": action,
        },
        timeout=10,
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result
