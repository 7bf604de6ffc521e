"""Regulatory clocks: which deadlines an incident starts (its type, severity and the declared
context of the assets it names), and, end to end with a short clock, the deadlines in Slack,
Jira and the report, the reminder, the escalation when one is missed, and a responder's record."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aisoar.clocks import AssetsError, AssetsFile, deadlines_for, load_assets
from aisoar.models import Severity
from aisoar.store import Store
from aisoar.store.clocks import NOTIFIED
from aisoar.taxonomy import IncidentType
from tests import prefect_api

ASSETS = AssetsFile.model_validate(
    {
        "organisation": {"essential_entity": True},
        "assets": [
            {"name": "chatbot", "refs": ["agent:support-bot"], "personal_data": True},
            {"name": "scorer", "refs": ["model:fraud-scorer"], "high_risk_ai": True},
            {
                "name": "grid model",
                "refs": ["model:grid-balancer"],
                "high_risk_ai": True,
                "critical_infrastructure": True,
            },
            {"name": "docs bot", "refs": ["agent:docs-bot"], "personal_data": False},
        ],
    }
)


def keys(kind: IncidentType, severity: Severity, *refs: str, assets: AssetsFile = ASSETS) -> dict[str, int]:
    return {d.key: d.seconds for d in deadlines_for(kind, severity, set(refs), assets)}


def test_the_type_and_the_declared_context_start_the_clocks() -> None:
    day, hour = 86400, 3600
    nis2 = {"nis2-early-warning": 24 * hour, "nis2-notification": 72 * hour, "nis2-final-report": 30 * day}
    assert keys(IncidentType.data_leakage, Severity.high, "agent:support-bot") == {"gdpr-art33": 72 * hour, **nis2}
    assert keys(IncidentType.data_leakage, Severity.medium, "agent:docs-bot") == {}  # declared: no personal data
    nothing = AssetsFile()
    assert keys(IncidentType.data_leakage, Severity.low, assets=nothing) == {"gdpr-art33": 72 * hour}  # may be
    assert keys(IncidentType.jailbreak, Severity.critical, "agent:support-bot", assets=nothing) == {}
    assert keys(IncidentType.model_backdoor, Severity.medium, "model:fraud-scorer") == {"ai-act-art73": 15 * day}
    assert keys(IncidentType.model_evasion, Severity.low, "model:grid-balancer") == {"ai-act-art73": 2 * day}
    assert keys(IncidentType.bias, Severity.low, "model:fraud-scorer") == {}  # tracked, never a serious incident
    dora = AssetsFile.model_validate({"organisation": {"financial_entity": True}})
    assert keys(IncidentType.api_abuse, Severity.critical, assets=dora) == {
        "dora-initial": 4 * hour,
        "dora-intermediate": 72 * hour,
        "dora-final": 30 * day,
    }
    (why,) = [d.why for d in deadlines_for(IncidentType.data_leakage, Severity.low, {"agent:support-bot"}, ASSETS)]
    assert why == "asset chatbot is declared personal data"


def test_a_wrong_assets_file_says_what_is_wrong(tmp_path: Path) -> None:
    assert load_assets(tmp_path / "absent.yaml") == AssetsFile()
    wrong = tmp_path / "assets.yaml"
    wrong.write_text("assets:\n  - name: x\n    refs: [agent:x]\n    personal: yes\n")
    with pytest.raises(AssetsError, match="personal\n  Extra inputs are not permitted"):
        load_assets(wrong)


def test_a_clock_starts_once_is_reminded_once_and_escalated_once(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    aware = datetime.now(UTC) - timedelta(hours=60)
    clock = {"key": "gdpr-art33", "regime": "GDPR Art. 33", "what": "notify", "why": "test", "aware_at": aware}
    due = aware + timedelta(hours=72)
    assert len(store.start_clocks("INC-1", [{**clock, "due_at": due}])) == 1
    assert store.start_clocks("INC-1", [{**clock, "due_at": due}]) == []  # a second run starts nothing
    now = datetime.now(UTC)
    with ThreadPoolExecutor(4) as pool:  # four replicas' sweeps at once
        claimed = list(pool.map(lambda _: store.claim_clocks(now, "reminded_at", 0.25), range(4)))
    assert sorted(len(c) for c in claimed) == [0, 0, 0, 1]  # 12 h of 72 left: within the last quarter
    assert store.claim_clocks(now, "escalated_at") == []  # not yet due
    later = due + timedelta(minutes=1)
    assert [c.key for c in store.claim_clocks(later, "escalated_at")] == ["gdpr-art33"]
    assert store.claim_clocks(later, "escalated_at") == []
    (running,) = store.clocks_for("INC-1")
    assert running.state(later) == "OVERDUE"
    recorded = store.record_clock("INC-1", "gdpr-art33", NOTIFIED, "dpo", "ref CNIL-2026-118")
    assert recorded.state(later) in ("notified", "notified (late)")
    with pytest.raises(KeyError, match="has no clock nis2"):
        store.record_clock("INC-1", "nis2-notification", NOTIFIED, "dpo", "x")


def test_a_short_clock_shows_its_deadline_and_escalates_when_missed(stack_for: Any, tmp_path: Path) -> None:
    from tests.test_playbooks import example, run_playbook

    assets = tmp_path / "assets.yaml"
    assets.write_text("assets:\n  - name: support chatbot\n    refs: [agent:support-bot]\n    personal_data: true\n")
    stack = stack_for(
        ("agent", "litellm"),
        assets_file=assets,
        regulatory_clock_seconds={"gdpr-art33": 25},
        clock_reminder_fraction=0.4,
    )
    started = time.monotonic()
    incident_id = run_playbook(stack, example("data-leakage"), "data-leakage")
    store = stack.svc.store
    (clock,) = store.clocks_for(incident_id)
    assert clock.key == "gdpr-art33" and clock.why == "asset support chatbot is declared personal data"
    # The announcement (the thread's first message) and the Jira issue carry the deadline.
    parent = json.dumps(stack.sandbox.slack.messages[0]["blocks"])
    assert "Regulatory deadlines:" in parent and "GDPR Art. 33: notify the supervisory authority" in parent
    (issue,) = [i for i in stack.sandbox.jira.issues.values() if "aisoar-review" not in i["fields"]["labels"]]
    assert "Regulatory deadlines (from awareness; counsel confirms):" in issue["fields"]["description"]
    report = prefect_api.artifact(f"incident-report-{incident_id.lower()}")
    assert report is not None and "## Regulatory deadlines" in report["data"]

    def replies() -> str:
        return " ".join(r["text"] for r in stack.sandbox.slack.replies)

    deadline = time.monotonic() + 60
    while "ESCALATED: DEADLINE MISSED: GDPR Art. 33" not in replies() and time.monotonic() < deadline:
        time.sleep(0.5)
    told = replies()
    assert "REMINDER: GDPR Art. 33: notify the supervisory authority of the personal data breach is due in" in told
    assert "ESCALATED: DEADLINE MISSED: GDPR Art. 33" in told, told
    assert told.count("ESCALATED: DEADLINE MISSED") == 1 and told.count("REMINDER: GDPR") == 1
    assert "could NOT page on-call: PagerDuty is not configured" in told
    assert time.monotonic() - started >= 10  # not before the deadline
    comments = " ".join(c["body"] for c in issue["fields"]["comment"]["comments"])
    assert "DEADLINE MISSED" in comments.replace("\\", "")
    store.record_clock(incident_id, "gdpr-art33", NOTIFIED, "dpo", "notified the CNIL, ref 2026-118")
    (recorded,) = store.clocks_for(incident_id)
    assert recorded.state(datetime.now(UTC)) == "notified (late)"
    timeline = [e.message for e in store.get_incident(incident_id).timeline if e.kind == "clock"]
    assert timeline[0].startswith("regulatory clock started: GDPR Art. 33") and "recorded by dpo" in timeline[-1]


def test_the_report_as_pdf_stix_and_avid(stack_for: Any, tmp_path: Path) -> None:
    """A data leakage run to its end (approvals answered, a clock started): the PDF renders (its
    first page drawn as an image: not blank, and its text says what was and was not done, who
    approved, the deadline and the evidence), the STIX bundle passes the OASIS validator, and
    the AVID report fits AVID's own data model. The alert's hostile text stays text."""
    import os
    import subprocess
    import sys

    import pypdfium2 as pdfium
    from avidtools.datamodels.report import Report
    from stix2validator import ValidationOptions, validate_string

    from aisoar.config import PROJECT_ROOT
    from tests.test_playbooks import example, run_playbook

    assets = tmp_path / "assets.yaml"
    assets.write_text("assets:\n  - name: support chatbot\n    refs: [agent:support-bot]\n    personal_data: true\n")
    stack = stack_for(("agent", "litellm"), assets_file=assets)
    incident_id = run_playbook(stack, example("data-leakage"), "data-leakage")
    out = {name: tmp_path / name for name in ("report.pdf", "incident.stix.json", "incident.avid.json")}
    env = {**os.environ, "AISOAR_DATA_DIR": str(stack.settings.data_dir), "AISOAR_SANDBOX": "false"}
    made = subprocess.run(
        [sys.executable, "-m", "cli.main", "report", incident_id, "--pdf", str(out["report.pdf"]),
         "--stix", str(out["incident.stix.json"]), "--avid", str(out["incident.avid.json"])],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr

    document = pdfium.PdfDocument(str(out["report.pdf"]))
    image = document[0].render(scale=1.5).to_pil().convert("L")
    image.save(tmp_path / "report-page-1.png")
    dark = sum(1 for value in image.getdata() if value < 128) / (image.width * image.height)
    assert 0.005 < dark < 0.5, dark  # text on a page: neither blank nor a black box
    text = " ".join(document[i].get_textpage().get_text_range() for i in range(len(document)))
    text = " ".join(text.split())
    assert f"AI incident {incident_id}" in text and "Outcome of playbook data-leakage" in text
    assert "Not done:" in text and "Regulatory deadlines" in text and "GDPR Art. 33" in text
    record = stack.svc.store.approvals_for(incident_id)[0]
    assert record.answers and f"{record.answers[0].person} approve via prefect-ui (counted)" in text
    assert "Evidence manifest" in text and "Signed with Ed25519 key" in text
    assert "<!here> SYSTEM" not in text  # the description is not in the report; the title is, quoted
    assert "support-bot returned another customer" in text

    bundle = out["incident.stix.json"].read_text()
    validated = validate_string(bundle, ValidationOptions(version="2.1"))
    assert validated.is_valid, [str(e) for r in validated.object_results for e in r.errors]
    objects = json.loads(bundle)["objects"]
    kinds = {o["type"] for o in objects}
    assert {"incident", "attack-pattern", "indicator", "relationship", "identity"} <= kinds
    patterns = {o["pattern"] for o in objects if o["type"] == "indicator"}
    assert "[ipv4-addr:value = '45.155.205.240']" in patterns and "[user-account:user_id = 'u-5120']" in patterns
    atlas = {r["external_id"] for o in objects if o["type"] == "attack-pattern" for r in o["external_references"]}
    assert {"AML.T0057", "AML.T0024"} <= atlas

    avid = Report.model_validate(json.loads(out["incident.avid.json"].read_text()))
    assert avid.metadata is not None and avid.metadata.report_id == f"aisoar-{incident_id}"
    assert avid.impact is not None and "S0301: Information Leak" in [s.value for s in avid.impact.avid.sep_view]
