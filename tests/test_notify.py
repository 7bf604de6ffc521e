"""Slack and Jira: one Slack thread per incident, the Jira case (timeline, evidence, close),
hostile text kept inert, and the connector matrix (retries, storms, timeouts, plan mode,
secrets) through a fault proxy in front of the faithful fakes."""

from __future__ import annotations

import base64
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.schemas.objects import State

from aisoar.config import PROJECT_ROOT, Settings
from aisoar.evidence import EvidenceStore
from aisoar.ingress.adapters import generic_json
from aisoar.models import IncidentStatus, Severity
from aisoar.specs import PlaybookSpec, parse_spec
from aisoar.store import Store
from cli.prefect_server import PrefectServer
from connectors.errors import ConnectorError
from connectors.jira import JiraTickets
from connectors.slack import SlackNotifier
from sandbox.stack import JIRA_PROJECT, SLACK_CHANNEL, Sandbox
from tasks import REGISTRY
from tasks.base import ActionContext, Outcome, StepOutcome
from tasks.incident import CloseInputs
from tasks.jira import CloseIssueInputs, IssueInputs, TicketInputs, incident_label
from tasks.slack import NotifyInputs, UpdateInputs
from tests import matrix
from tests.conftest import make_settings
from tests.faults import Fault, fault_proxy

FAST = {"backoff": 0.01, "timeout": 5.0, "attempts": 3}
SHORT = {**FAST, "timeout": 0.5}  # only where a timeout is the point
HOSTILE = "<!channel> *bold* `code` <https://evil.example|click> [x|http://evil] {noformat} ~strike~"
FLOW_RUN = "0b1e5b0c-9a3f-4a8e-9c57-1a2b3c4d5e6f"
SANDBOX_CHANNEL_ID = "C0AISOAR01"  # the id the Slack stand-in gives the incident channel


@dataclass
class Case:
    ctx: ActionContext
    store: Store
    sandbox: Sandbox
    env: dict[str, str]

    def at(self, step_id: str, spec: PlaybookSpec | None = None) -> ActionContext:
        c = self.ctx
        return ActionContext(
            c.incident_id, c.playbook, step_id, c.flow_run_id, c.settings, c.store, c.evidence, spec=spec
        )


def leaked_key_spec() -> PlaybookSpec:
    name = "leaked-llm-api-key.yaml"
    return parse_spec((PROJECT_ROOT / "playbook_specs" / name).read_text(), name)


def open_case(sandbox: Sandbox, data: Path, which: tuple[str, ...], title: str | None = None, **extra: Any) -> Case:
    env = sandbox.start(which)
    settings = make_settings(data, env=env, http_timeout_seconds=2.0, **extra)
    return case_for(settings, sandbox, env, title)


def case_for(settings: Settings, sandbox: Sandbox, env: dict[str, str], title: str | None = None) -> Case:
    store = Store(settings.store_url)
    payload = json.loads((PROJECT_ROOT / "examples/alerts/leaked-openai-key.json").read_text())
    if title is not None:
        payload["title"] = title
    alert = generic_json("generic", json.dumps(payload).encode())
    store.accept_alert(alert, "delivery")
    incident_id, _ = store.correlate(alert, alert.incident_type, Severity.critical, timedelta(hours=1))
    store.add_timeline(incident_id, "incident", "incident opened (critical)")
    evidence = EvidenceStore(settings.evidence_dir, store)
    ctx = ActionContext(incident_id, "leaked-llm-api-key", "notify-oncall", FLOW_RUN, settings, store, evidence)
    return Case(ctx, store, sandbox, env)


def run(name: str, ctx: ActionContext, inputs: Any) -> StepOutcome:
    result = REGISTRY[name].task.fn(ctx, inputs)
    assert isinstance(result, StepOutcome), result
    return result


def probe(name: str, ctx: ActionContext, inputs: Any, outcome: StepOutcome) -> Any:
    check = REGISTRY[name].probe
    assert check is not None
    return check(ctx, inputs, outcome)


# -- Slack ----------------------------------------------------------------------------------
def test_one_parent_per_incident_then_threaded_replies(sandbox: Sandbox, tmp_path: Path) -> None:
    case = open_case(sandbox, tmp_path / "data", ("slack",))
    first = run("slack.notify_oncall", case.ctx, NotifyInputs(message="key blocked"))
    assert first.status is Outcome.ok and first.output["new_thread"] is True
    assert probe("slack.notify_oncall", case.ctx, NotifyInputs(), first).ok

    parent = sandbox.slack.messages[0]
    assert parent["attachments"][0]["color"] == "#B01E1E"  # critical
    blocks = json.dumps(parent["blocks"])
    assert f"/runs/flow-run/{FLOW_RUN}" in blocks and "/artifacts/key/incident-report-" in blocks
    assert case.ctx.incident_id in parent["text"]

    case.store.set_incident_status(case.ctx.incident_id, IncidentStatus.contained)
    again = run("slack.notify_oncall", case.at("notify-again"), NotifyInputs(message="second notice"))
    update = run("slack.post_update", case.at("update"), UpdateInputs(message="approval pending"))
    assert len(sandbox.slack.messages) == 1, "notifying twice posted a second parent"
    assert [r["thread_ts"] for r in sandbox.slack.replies] == [parent["ts"], parent["ts"]]
    assert again.output["thread_ts"] == update.output["thread_ts"] == parent["ts"]
    assert len(sandbox.slack.updates) == 2
    assert "*Status:*\ncontained" in json.dumps(sandbox.slack.messages[0]["blocks"]).replace("\\n", "\n")
    assert "second notice" in sandbox.slack.replies[0]["text"]
    assert probe("slack.post_update", case.ctx, UpdateInputs(message="x"), update).ok
    gone = StepOutcome(status=Outcome.ok, summary="", output={**update.output, "ts": "1.000001"})
    assert not probe("slack.post_update", case.ctx, UpdateInputs(message="x"), gone).ok


def test_hostile_alert_text_stays_inert_in_slack(sandbox: Sandbox, tmp_path: Path) -> None:
    case = open_case(sandbox, tmp_path / "data", ("slack",), title=HOSTILE)
    run("slack.notify_oncall", case.ctx, NotifyInputs(message=HOSTILE))
    run("slack.post_update", case.ctx, UpdateInputs(message=HOSTILE))
    for message in [*sandbox.slack.messages, *sandbox.slack.replies]:
        shown = json.dumps(message, ensure_ascii=False)
        assert "<!channel>" not in shown and "<https://evil" not in shown and "&lt;!channel&gt;" in shown
        assert "*bold*" not in shown and "`code`" not in shown and "~strike~" not in shown
        assert "\u200b*\u200bbold\u200b*\u200b" in shown


def test_slack_plan_mode_posts_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    case = open_case(sandbox, tmp_path / "data", ("slack",), plan_mode=True)
    planned = REGISTRY["slack.notify_oncall"].task.fn(case.ctx, NotifyInputs(message="m"))
    assert planned.name == "Planned" and "chat.postMessage" in planned.message
    assert sandbox.slack.messages == [] and sandbox.slack.replies == []
    slack = SlackNotifier(sandbox.slack.token, SLACK_CHANNEL, case.env["AISOAR_SLACK_BASE_URL"], plan=True)
    assert "sandbox" in slack.check()  # reads still run in plan mode

    live = SlackNotifier(sandbox.slack.token, SLACK_CHANNEL, case.env["AISOAR_SLACK_BASE_URL"])
    posted = live.post("parent", [{"type": "section", "text": {"type": "mrkdwn", "text": "p"}}])

    def state() -> Any:
        return json.dumps([sandbox.slack.messages, sandbox.slack.replies])

    matrix.plan_changes_nothing(lambda: slack.post("r", [], thread_ts=posted["ts"]), state, "chat.postMessage")
    matrix.plan_changes_nothing(lambda: slack.update(posted["channel"], posted["ts"], "u", []), state, "chat.update")


def test_slack_without_configuration_is_skipped(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    store = Store(settings.store_url)
    ctx = ActionContext("INC-x", "p", "s", None, settings, store, EvidenceStore(settings.evidence_dir, store))
    for name, inputs in (("slack.notify_oncall", NotifyInputs()), ("slack.post_update", UpdateInputs(message="m"))):
        skipped = REGISTRY[name].task.fn(ctx, inputs)
        assert skipped.name == "Not configured" and "AISOAR_SLACK_TOKEN" in skipped.message


def test_slack_matrix_through_a_fault_proxy(sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env = sandbox.start(("slack",))
    token = sandbox.slack.token
    with fault_proxy(env["AISOAR_SLACK_BASE_URL"].removesuffix("/api/")) as (proxy, url):
        slack = SlackNotifier(token, SLACK_CHANNEL, f"{url}/api/", **FAST)
        assert "sandbox" in slack.check()
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hello"}}]
        posted = matrix.retry_after_then_success(proxy, "chat.postMessage", lambda: slack.post("hi", blocks))
        assert len(sandbox.slack.messages) == 1 and posted["ts"] == sandbox.slack.messages[0]["ts"]
        error = matrix.storm_exhausts_retries(
            proxy,
            "chat.update",
            lambda: slack.update(posted["channel"], posted["ts"], "u", blocks),
            attempts=3,
            starts_with=f"Slack chat.update on channel {posted['channel']} failed (HTTP 500)",
        )
        storm = matrix.storm_exhausts_retries(
            proxy,
            "chat.postMessage",
            lambda: slack.post("r", blocks, thread_ts=posted["ts"]),
            attempts=3,
            starts_with=f"Slack chat.postMessage on channel {SLACK_CHANNEL} failed (HTTP 500)",
        )
        # a timeout is not retried: Slack may have posted, a second post would be a duplicate
        hasty = SlackNotifier(token, SLACK_CHANNEL, f"{url}/api/", **SHORT)
        matrix.times_out(proxy, "chat.postMessage", lambda: hasty.post("t", blocks), attempts=1, delay=1.5)
        assert len(proxy.matching()) == 1
        bad = SlackNotifier("xoxb-wrong-token-123", SLACK_CHANNEL, f"{url}/api/", **FAST)
        with pytest.raises(ConnectorError) as refused:
            bad.check()
        assert str(refused.value) == "Slack auth.test on workspace failed (HTTP 200): invalid_auth"
        sent = [s.headers.get("authorization", "") for s in proxy.seen]
    assert any(token in h for h in sent)  # the token did go to Slack, and nowhere else:
    matrix.secret_absent(token, caplog.text, str(error), str(storm), str(refused.value), json.dumps(posted))


def test_slack_fake_threads_and_updates_like_slack(sandbox: Sandbox) -> None:
    env = sandbox.start(("slack",))
    slack = SlackNotifier(sandbox.slack.token, SLACK_CHANNEL, env["AISOAR_SLACK_BASE_URL"], **FAST)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}]
    with pytest.raises(ConnectorError, match="thread_not_found"):
        slack.post("r", blocks, thread_ts="1234.000001")
    posted = slack.post("p", blocks)
    with pytest.raises(ConnectorError, match="channel_not_found"):  # chat.update wants the channel id
        slack.update(SLACK_CHANNEL, posted["ts"], "u", blocks)
    with pytest.raises(ConnectorError, match="message_not_found"):
        slack.update(posted["channel"], "1234.000001", "u", blocks)
    with pytest.raises(ConnectorError, match="invalid_attachments"):
        slack.post("c", blocks, attachments=[{"color": "red; background: url(x)"}])
    reply = slack.post("r", blocks, thread_ts=posted["ts"])
    assert [m["ts"] for m in slack.thread(posted["channel"], posted["ts"])] == [posted["ts"], reply["ts"]]
    assert slack.thread(posted["channel"], "1234.000001") == []
    with pytest.raises(ValueError):
        slack.post("r", blocks, thread_ts="<!channel>")


# -- Jira -----------------------------------------------------------------------------------
def test_jira_case_open_comment_link_close(sandbox: Sandbox, tmp_path: Path) -> None:
    case = open_case(sandbox, tmp_path / "data", ("jira",))
    ctx = case.at("open-ticket")
    opened = run("jira.open_issue", ctx, TicketInputs())
    key = opened.output["issue_key"]
    assert key == f"{JIRA_PROJECT}-1" and probe("jira.open_issue", ctx, TicketInputs(), opened).ok
    assert run("jira.open_issue", ctx, TicketInputs()).output["issue_key"] == key
    assert len(sandbox.jira.issues) == 1

    commented = run("jira.comment_timeline", ctx, IssueInputs())
    assert commented.output["posted"] == 1 and probe("jira.comment_timeline", ctx, IssueInputs(), commented).ok
    assert run("jira.comment_timeline", ctx, IssueInputs()).output["posted"] == 0  # twice: no duplicate
    case.store.add_timeline(case.ctx.incident_id, "step", "key blocked at the gateway", step_id="block")
    more = run("jira.comment_timeline", ctx, IssueInputs())
    comments = sandbox.jira.issues[key]["fields"]["comment"]["comments"]
    assert more.output["posted"] == 1 and len(comments) == 2
    assert "key blocked at the gateway" in comments[1]["body"] and "incident opened" not in comments[1]["body"]

    shas = [case.ctx.keep({"n": n}, f"record {n}", asset="litellm:virtual-key:" + "a" * 64) for n in range(2)]
    linked = run("jira.link_evidence", ctx, IssueInputs())
    assert linked.output["linked"] == 2 and probe("jira.link_evidence", ctx, IssueInputs(), linked).ok
    assert run("jira.link_evidence", ctx, IssueInputs()).output["linked"] == 0
    links = sandbox.jira.issues[key]["remotelinks"]
    assert len(links) == 3 and {f"aisoar-evidence:{s}" for s in shas} <= {x["globalId"] for x in links}
    assert all("/artifacts/key/incident-report-" in x["object"]["url"] for x in links)

    not_yet = StepOutcome(status=Outcome.ok, summary="", output={})
    assert not probe("jira.close_issue", ctx, CloseIssueInputs(), not_yet).ok
    closed = run("jira.close_issue", ctx, CloseIssueInputs())
    assert closed.output == {"issue_key": key, "status": "Done", "already": False}
    assert sandbox.jira.issues[key]["transitions_done"] == ["31"]
    assert probe("jira.close_issue", ctx, CloseIssueInputs(), closed).ok
    assert run("jira.close_issue", ctx, CloseIssueInputs()).output["already"] is True  # twice: harmless


def test_a_storms_incident_opens_an_issue_jira_takes(sandbox: Sandbox, tmp_path: Path) -> None:
    """Jira refuses a description over 32,767 characters (the stand-in too): an incident with
    thousands of alerts lists the first ones, counts the rest, and its other entries stay."""
    case = open_case(sandbox, tmp_path / "data", ("jira",))
    for n in range(600):
        case.store.add_timeline(case.ctx.incident_id, "alert", f"alert ALR-{n} from generic: " + "storm " * 60)
    case.store.add_timeline(case.ctx.incident_id, "step", "key blocked at the gateway", step_id="block")
    opened = run("jira.open_issue", case.at("open-ticket"), TicketInputs())
    description = sandbox.jira.issues[opened.output["issue_key"]]["fields"]["description"]
    assert len(description) <= 32767
    listed = [n for n in range(600) if f"ALR\\-{n} " in description]  # Jira markup: "-" escaped
    assert listed == list(range(20))
    assert "key blocked at the gateway" in description
    assert "580 more entries not listed here (580 of them alerts)" in description


def test_a_storms_timeline_is_one_comment_that_counts_the_alerts_in_a_row(sandbox: Sandbox, tmp_path: Path) -> None:
    """A storm's alerts on the issue: the first of a row listed, the rest counted in one line,
    every other entry kept, and the marker through the last entry (not dozens of comments of
    alert titles)."""
    case = open_case(sandbox, tmp_path / "data", ("jira",))
    for n in range(600):
        case.store.add_timeline(case.ctx.incident_id, "alert", f"alert ALR-{n} from generic: " + "storm " * 60)
    case.store.add_timeline(case.ctx.incident_id, "step", "key blocked at the gateway", step_id="block")
    for n in range(600, 603):
        case.store.add_timeline(case.ctx.incident_id, "alert", f"alert ALR-{n} from generic: late")
    ctx = case.at("open-ticket")
    key = run("jira.open_issue", ctx, TicketInputs()).output["issue_key"]
    commented = run("jira.comment_timeline", ctx, IssueInputs())
    entries = len(case.store.get_incident(case.ctx.incident_id).timeline)
    assert commented.output["posted"] == 1 and commented.output["through"] == entries, commented.output
    (comment,) = [c["body"] for c in sandbox.jira.issues[key]["fields"]["comment"]["comments"]]
    listed = [n for n in range(603) if f"ALR\\-{n} " in comment]
    assert listed == [0, 1, 2, 3, 4, 600, 601, 602], listed
    assert "*alert*: 595 more alerts in a row, not listed here" in comment
    assert comment.index("595 more alerts") < comment.index("key blocked at the gateway") < comment.index("ALR\\-600")
    assert comment.endswith(f"aisoar-timeline-through: {entries}")
    assert run("jira.comment_timeline", ctx, IssueInputs()).output["posted"] == 0


def test_the_jira_stand_in_refuses_text_over_jiras_limit(sandbox: Sandbox) -> None:
    sandbox.start(("jira",))
    auth = (sandbox.jira.user, sandbox.jira.token)
    headers = {"X-Atlassian-Token": "no-check"}
    fields = {"project": {"key": JIRA_PROJECT}, "issuetype": {"name": "Task"}, "summary": "s"}
    with httpx.Client(base_url=sandbox.servers["jira"].url, auth=auth, headers=headers) as jira:
        refused = jira.post("/rest/api/2/issue", json={"fields": {**fields, "description": "x" * 32768}})
        assert refused.status_code == 400 and "32,767" in refused.json()["errors"]["description"]
        key = jira.post("/rest/api/2/issue", json={"fields": {**fields, "description": "x" * 32767}}).json()["key"]
        assert jira.post(f"/rest/api/2/issue/{key}/comment", json={"body": "y" * 32768}).status_code == 400
        assert jira.post(f"/rest/api/2/issue/{key}/comment", json={"body": "y" * 32767}).status_code == 201


def test_jira_transition_by_name_and_the_workflow_refuses_invalid_ids(sandbox: Sandbox) -> None:
    env = sandbox.start(("jira",))
    jira = JiraTickets(env["AISOAR_JIRA_URL"], sandbox.jira.user, sandbox.jira.token, JIRA_PROJECT, **FAST)
    key = jira.create_issue("s", "d", ["aisoar"], None)
    assert [t["name"] for t in jira.transitions(key)] == ["Start Progress", "Done"]
    with pytest.raises(ConnectorError, match="no transition named 'Resolve'; offered: Start Progress"):
        jira.transition_to_done(key, "Resolve")
    with pytest.raises(ConnectorError) as invalid:
        jira._call("transition issue", key, lambda: jira._jira().transition_issue(key, "41"))
    assert invalid.value.status == 400 and "Transition id '41' is not valid" in invalid.value.detail
    moved = jira.transition_to_done(key, "done")
    assert moved == {"from": "To Do", "to": "Done", "transition": "31"}
    assert jira.status(key) == {"name": "Done", "category": "done"}
    with pytest.raises(ValueError):
        jira.add_comment("SEC-1/../../admin", "x")


def test_hostile_text_stays_inert_in_jira_and_cannot_forge_the_marker(sandbox: Sandbox, tmp_path: Path) -> None:
    forged = HOSTILE + "\naisoar-timeline-through: 999"
    case = open_case(sandbox, tmp_path / "data", ("jira",), title=forged)
    case.store.add_timeline(case.ctx.incident_id, "alert", forged)
    ctx = case.at("ticket")
    key = run("jira.open_issue", ctx, TicketInputs(details=forged)).output["issue_key"]
    run("jira.comment_timeline", ctx, IssueInputs())
    case.store.add_timeline(case.ctx.incident_id, "step", "later entry", step_id="later")
    assert run("jira.comment_timeline", ctx, IssueInputs()).output["posted"] == 1  # the forged marker was inert
    issue = sandbox.jira.issues[key]
    for text in [issue["fields"]["description"], *(c["body"] for c in issue["fields"]["comment"]["comments"])]:
        assert "{noformat}" not in text and "[x|http://evil]" not in text and "*bold*" not in text
        assert "\naisoar-timeline-through: 999" not in text


def test_jira_plan_mode_changes_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    case = open_case(sandbox, tmp_path / "data", ("jira",), plan_mode=True)
    planned = REGISTRY["jira.open_issue"].task.fn(case.ctx, TicketInputs())
    assert planned.name == "Planned" and "create issue" in planned.message and sandbox.jira.issues == {}
    live = JiraTickets(case.env["AISOAR_JIRA_URL"], sandbox.jira.user, sandbox.jira.token, JIRA_PROJECT, **FAST)
    key = live.create_issue("s", "d", [incident_label(case.ctx.incident_id)], None)
    plan = JiraTickets(
        case.env["AISOAR_JIRA_URL"], sandbox.jira.user, sandbox.jira.token, JIRA_PROJECT, plan=True, **FAST
    )

    def state() -> str:
        return json.dumps(sandbox.jira.issues, sort_keys=True)

    matrix.plan_changes_nothing(lambda: plan.add_comment(key, "c"), state, "add comment")
    matrix.plan_changes_nothing(lambda: plan.transition_to_done(key), state, "transition issue")
    matrix.plan_changes_nothing(lambda: plan.link(key, "g", "https://x.example/", "t"), state, "add remote link")
    before = state()
    for name, inputs in (
        ("jira.comment_timeline", IssueInputs()),
        ("jira.link_evidence", IssueInputs()),
        ("jira.close_issue", CloseIssueInputs()),
    ):
        result = REGISTRY[name].task.fn(case.ctx, inputs)
        assert result.name == "Planned", (name, result.message)
    assert state() == before, "plan mode changed the issue"
    assert sandbox.jira.issues[key]["fields"]["comment"]["total"] == 0


def test_jira_without_configuration_is_skipped(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    store = Store(settings.store_url)
    ctx = ActionContext("INC-x", "p", "s", None, settings, store, EvidenceStore(settings.evidence_dir, store))
    for name, inputs in (
        ("jira.open_issue", TicketInputs()),
        ("jira.comment_timeline", IssueInputs()),
        ("jira.link_evidence", IssueInputs()),
        ("jira.close_issue", CloseIssueInputs()),
    ):
        skipped = REGISTRY[name].task.fn(ctx, inputs)
        assert (
            skipped.name == "Not configured"
            and "AISOAR_JIRA_URL" in skipped.message
            and "AISOAR_JIRA_TOKEN" in skipped.message
        )


def test_jira_matrix_through_a_fault_proxy(sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env = sandbox.start(("jira",))
    user, token = sandbox.jira.user, sandbox.jira.token
    basic = base64.b64encode(f"{user}:{token}".encode()).decode()
    with fault_proxy(env["AISOAR_JIRA_URL"]) as (proxy, url):
        jira = JiraTickets(url, user, token, JIRA_PROJECT, **FAST)
        assert jira.check() == f"Jira project {JIRA_PROJECT} reachable as {user}"
        key = matrix.retry_after_then_success(
            proxy, r"POST /rest/api/2/issue$", lambda: jira.create_issue("s", "d", ["aisoar"], "High")
        )
        assert list(sandbox.jira.issues) == [key]  # the 429 created nothing; the retry created one
        matrix.retry_after_then_success(proxy, "comment", lambda: jira.add_comment(key, "first"))
        storm = matrix.storm_exhausts_retries(
            proxy,
            "comment",
            lambda: jira.add_comment(key, "second"),
            attempts=3,
            starts_with=f"Jira add comment on {key} failed (HTTP 500)",
        )
        # the library's own 503 retries are off: 503 is retried by our bounded policy only
        proxy.script(*[Fault(status=503) for _ in range(8)], match="transitions")
        with pytest.raises(ConnectorError, match=r"^Jira read transitions on .* failed \(HTTP 503\)"):
            jira.transitions(key)
        assert len(proxy.matching()) == 3
        hasty = JiraTickets(url, user, token, JIRA_PROJECT, **SHORT)
        matrix.times_out(proxy, "remotelink", lambda: hasty.remote_links(key), attempts=3, delay=1.5)
        with pytest.raises(ConnectorError) as refused:
            JiraTickets(url, user, "wrong-token", JIRA_PROJECT, **FAST).check()
        assert str(refused.value).startswith(f"Jira connect on {url} failed (HTTP 401)")
        assert len(sandbox.jira.issues[key]["fields"]["comment"]["comments"]) == 1
    texts = [caplog.text, str(storm), str(storm.detail), str(refused.value), key]
    matrix.secret_absent(token, *texts)
    matrix.secret_absent(basic, *texts)


# -- closing the incident ---------------------------------------------------------------------
def test_close_moves_the_issue_to_done_and_posts_a_final_update(
    prefect_server: PrefectServer, sandbox: Sandbox, tmp_path: Path
) -> None:
    case = open_case(sandbox, tmp_path / "data", ("slack", "jira"))
    run("slack.notify_oncall", case.ctx, NotifyInputs(message="blocked"))
    key = run("jira.open_issue", case.at("open-ticket"), TicketInputs()).output["issue_key"]
    spec = leaked_key_spec()
    # Nothing verified yet: the close is refused, the incident stays open and Jira is not moved.
    refused = REGISTRY["incident.close"].task.fn(case.at("close", spec), CloseInputs())
    assert isinstance(refused, State) and refused.name == "Refused" and refused.type.value == "FAILED"
    assert "NOT met: the key is refused at the gateway or at the provider" in str(refused.message)
    assert case.store.get_incident(case.ctx.incident_id).status is not IncidentStatus.closed
    assert sandbox.jira.issues[key]["fields"]["status"]["name"] != "Done"
    # The block verified at the gateway meets the objective: now it closes, saying so.
    case.store.record_step(
        case.ctx.incident_id, spec.name, "block-key-at-gateway", "ok", {"summary": "key blocked (verified)"}
    )
    closed = run("incident.close", case.at("close", spec), CloseInputs())
    assert case.store.get_incident(case.ctx.incident_id).status is IncidentStatus.closed
    assert sandbox.jira.issues[key]["fields"]["status"]["name"] == "Done"
    assert sandbox.jira.issues[key]["remotelinks"], "the report was not linked"
    resolution = "contained: met: the key is refused at the gateway or at the provider (block-key-at-gateway: key"
    assert resolution in sandbox.jira.issues[key]["fields"]["comment"]["comments"][-1]["body"].replace("\\", "")
    assert f"Incident closed: {resolution}" in sandbox.slack.replies[-1]["text"]
    assert "*Status:*\\nclosed" in json.dumps(sandbox.slack.messages[0]["blocks"])
    assert f"Jira {key}" in json.dumps(sandbox.slack.messages[0]["blocks"])
    assert "moved To Do -> Done" in closed.summary and len(sandbox.slack.messages) == 1


def test_a_jira_failure_does_not_lose_the_close(
    prefect_server: PrefectServer, sandbox: Sandbox, tmp_path: Path
) -> None:
    case = open_case(sandbox, tmp_path / "data", ("slack", "jira"))
    run("slack.notify_oncall", case.ctx, NotifyInputs())
    run("jira.open_issue", case.at("open-ticket"), TicketInputs())
    held = case.env["AISOAR_JIRA_TOKEN"]  # the token aisoar holds, now refused by Jira
    sandbox.jira.token = "rotated-elsewhere"
    from connectors.jira import SYSTEM as JIRA

    JIRA.clear_cache()
    spec = leaked_key_spec()
    case.store.record_step(
        case.ctx.incident_id, spec.name, "block-key-at-gateway", "ok", {"summary": "key blocked (verified)"}
    )
    closed = run("incident.close", case.at("close", spec), CloseInputs())
    incident = case.store.get_incident(case.ctx.incident_id)
    assert incident.status is IncidentStatus.closed and closed.status is Outcome.ok
    assert "Jira failed: Jira connect" in closed.summary and "HTTP 401" in closed.summary
    assert any(e.kind == "error" and e.message.startswith("Jira failed after the close") for e in incident.timeline)
    assert "Incident closed" in sandbox.slack.replies[-1]["text"]  # Slack was still told
    matrix.secret_absent(held, closed.summary, *(e.message for e in incident.timeline))


def test_a_deleted_parent_starts_a_new_thread(sandbox: Sandbox, tmp_path: Path) -> None:
    case = open_case(sandbox, tmp_path / "data", ("slack",))
    first = run("slack.notify_oncall", case.ctx, NotifyInputs())
    sandbox.slack.messages.clear()  # someone deleted the parent in Slack
    second = run("slack.post_update", case.at("update"), UpdateInputs(message="still contained"))
    assert second.output["new_thread"] is True and second.output["ts"] != first.output["ts"]
    assert len(sandbox.slack.messages) == 1 and "still contained" in json.dumps(sandbox.slack.messages[0])
    third = run("slack.post_update", case.at("later"), UpdateInputs(message="later"))
    assert third.output["thread_ts"] == second.output["ts"] and sandbox.slack.replies[-1]["text"] == "later"


def test_two_playbooks_notifying_at_once_share_one_parent(sandbox: Sandbox, tmp_path: Path) -> None:
    case = open_case(sandbox, tmp_path / "data", ("slack",))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: run("slack.notify_oncall", case.at(f"n{n}"), NotifyInputs()), range(4)))
    assert len(sandbox.slack.messages) == 1 and len(sandbox.slack.replies) == 3
    assert {r.output["thread_ts"] for r in results} == {sandbox.slack.messages[0]["ts"]}


def test_two_playbooks_opening_at_once_share_one_issue(sandbox: Sandbox, tmp_path: Path) -> None:
    case = open_case(sandbox, tmp_path / "data", ("jira",))
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda n: run("jira.open_issue", case.at(f"t{n}"), TicketInputs()), range(3)))
    assert len(sandbox.jira.issues) == 1 and {r.output["issue_key"] for r in results} == set(sandbox.jira.issues)
    wrong = StepOutcome(status=Outcome.ok, summary="", output={"issue_key": "SEC-1"})
    sandbox.jira.issues["SEC-1"]["fields"]["labels"] = ["aisoar"]  # someone removed the incident's label
    assert not probe("jira.open_issue", case.ctx, TicketInputs(), wrong).ok


def _interrupted_first_post(case: Case) -> str:
    """What a run killed between Slack's answer and the store's record leaves: the mark that the
    thread's first message was being sent, and that message in the channel; returns its ts."""
    from connectors.slack import SYSTEM as SLACK_SYSTEM
    from tasks.slack import PARENT_EVENT, PARENT_SENDING

    slack = SLACK_SYSTEM.client(case.ctx.settings)
    incident_id = case.ctx.incident_id
    case.store.add_timeline(
        incident_id, "request", "sending: the first message", step_id="notify-oncall", data={PARENT_SENDING: True}
    )
    posted = slack.post(
        text=f"Incident {incident_id}",
        blocks=[],
        metadata={"event_type": PARENT_EVENT, "event_payload": {"incident_id": incident_id}},
    )
    return posted["ts"]


def test_a_first_message_posted_by_an_interrupted_run_is_found_not_posted_again(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    env = {**sandbox.start(("slack",)), "AISOAR_SLACK_CHANNEL": SANDBOX_CHANNEL_ID}
    case = case_for(make_settings(tmp_path / "data", env=env), sandbox, env)
    lost_ts = _interrupted_first_post(case)
    told = run("slack.notify_oncall", case.ctx, NotifyInputs(message="key blocked"))
    assert told.status is Outcome.ok and told.output["new_thread"] is False
    assert told.output["thread_ts"] == lost_ts
    assert [m["ts"] for m in sandbox.slack.messages] == [lost_ts], "a second thread was started"
    assert [r["thread_ts"] for r in sandbox.slack.replies] == [lost_ts]
    assert sandbox.slack.messages[0]["text"] != f"Incident {case.ctx.incident_id}"  # brought up to date
    timeline = case.store.get_incident(case.ctx.incident_id).timeline
    assert any(e.message.startswith("Slack thread found in channel") for e in timeline)
    assert probe("slack.notify_oncall", case.ctx, NotifyInputs(), told).ok


def test_a_reply_posted_by_an_interrupted_step_is_found_not_posted_again(sandbox: Sandbox, tmp_path: Path) -> None:
    """A step killed between Slack's answer to its reply and the store's record of the step runs
    again on another replica: it finds its reply in the thread (by the reply's metadata) instead
    of posting a second one; another step's reply is still posted."""
    from connectors.slack import SYSTEM as SLACK_SYSTEM
    from tasks.slack import REPLY_EVENT, REPLY_SENDING, notify

    env = {**sandbox.start(("slack",)), "AISOAR_SLACK_CHANNEL": SANDBOX_CHANNEL_ID}
    case = case_for(make_settings(tmp_path / "data", env=env), sandbox, env)
    first = run("slack.notify_oncall", case.ctx, NotifyInputs(message="thread started"))
    assert first.output["new_thread"] is True
    told = notify(case.ctx, "deleting the key waits for approval", reply=True, once=True)  # killed after this
    replies = [r for r in sandbox.slack.replies if r["thread_ts"] == first.output["thread_ts"]]
    assert [r["ts"] for r in replies] == [told["ts"]]
    again = notify(case.ctx, "deleting the key waits for approval", reply=True, once=True)  # the step run again
    assert again["ts"] == told["ts"]
    assert [r["ts"] for r in sandbox.slack.replies if r["thread_ts"] == first.output["thread_ts"]] == [told["ts"]]
    timeline = case.store.get_incident(case.ctx.incident_id).timeline
    assert any(e.message.startswith(f"Slack reply of step {case.ctx.step_id} found in the thread") for e in timeline)
    marks = [e for e in timeline if e.kind == "request" and e.data.get(REPLY_SENDING)]
    assert marks and replies[0]["metadata"]["event_type"] == REPLY_EVENT
    # Without asking for it, conversations.replies carries no metadata (as Slack).
    slack = SLACK_SYSTEM.client(case.ctx.settings)
    assert all("metadata" not in m for m in slack.thread(str(first.output["channel"]), str(first.output["thread_ts"])))
    other = replace(case.ctx, step_id="open-ticket")
    posted = notify(other, "the Jira issue is open", reply=True, once=True)
    assert posted["ts"] != told["ts"] and len(sandbox.slack.replies) == 2


def test_a_line_the_runner_says_once_per_run_is_said_once_by_two_executions_of_the_run(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A runtime whose heartbeat lagged still executes a run that another runtime took over:
    both reach the run's end at the same moment. Its line is posted and commented once; the
    next run of the playbook (another run id) says its own."""
    from flows.tell import tell

    env = {**sandbox.start(("slack", "jira")), "AISOAR_SLACK_CHANNEL": SANDBOX_CHANNEL_ID}
    case = case_for(make_settings(tmp_path / "data", env=env), sandbox, env)
    run("slack.notify_oncall", case.ctx, NotifyInputs(message="thread started"))
    key = run("jira.open_issue", case.at("open-ticket"), TicketInputs()).output["issue_key"]
    line = "Playbook leaked-llm-api-key ended Contained"
    ctx = case.at("finish")
    with ThreadPoolExecutor(4) as pool:
        said = list(pool.map(lambda _: tell(ctx, line, once="leaked-llm-api-key/finish@run-1"), range(4)))
    assert [r["text"] for r in sandbox.slack.replies].count(line) == 1, said
    comments = [c["body"] for c in sandbox.jira.issues[key]["fields"]["comment"]["comments"]]
    assert sum(line in c.replace("\\", "") for c in comments) == 1, comments
    assert sum(d == [f"Slack {SANDBOX_CHANNEL_ID}: said already"] for d in said) == 3, said
    tell(ctx, line, once="leaked-llm-api-key/finish@run-2")
    assert [r["text"] for r in sandbox.slack.replies].count(line) == 2


def test_an_interrupted_first_post_in_a_channel_known_only_by_name_is_said_when_it_cannot_be_looked_for(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The channel is configured by name and no thread has told its id yet (Slack's history
    takes only an id): the thread is started, and the incident says a second one may follow."""
    case = open_case(sandbox, tmp_path / "data", ("slack",))
    _interrupted_first_post(case)
    told = run("slack.notify_oncall", case.ctx, NotifyInputs())
    assert told.status is Outcome.ok and told.output["new_thread"] is True
    assert len(sandbox.slack.messages) == 2
    timeline = case.store.get_incident(case.ctx.incident_id).timeline
    assert any(e.kind == "error" and "a second thread may follow" in e.message for e in timeline)
    # The id Slack answered is now known for that name: the next incident can look.
    assert case.store.slack_channel_id(env_channel(case)) == SANDBOX_CHANNEL_ID


def env_channel(case: Case) -> str:
    return case.env["AISOAR_SLACK_CHANNEL"]
