"""An incident's case links: where the incident lives in the systems people read.

The Slack thread, the Jira issue, the PagerDuty alert, the report and the playbook run, as
one typed record built in one place (``CaseLinks.of``). Where a link comes from the outside
(a Slack ts, a Jira key and URL), it is recorded on the incident's timeline when the system
answers (kind ``notify``) and read back from there, validated, so every step, playbook and
process finds the same thread and issue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aisoar.models import Incident

SLACK_TS = re.compile(r"^\d{1,12}\.\d{1,9}$")
SLACK_CHANNEL_ID = re.compile(r"^[CDG][A-Z0-9]{2,30}$")
JIRA_ISSUE_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,30}-[1-9][0-9]{0,9}$")


def report_key(incident_id: str) -> str:
    """The key of the incident's report artifact in Prefect."""
    return f"incident-report-{incident_id.lower()}"


def run_url(ui: str, flow_run_id: str) -> str:
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"


def report_url(ui: str, incident_id: str) -> str:
    return f"{ui.rstrip('/')}/artifacts/key/{report_key(incident_id)}"


@dataclass(frozen=True)
class SlackThread:
    channel: str
    ts: str


@dataclass(frozen=True)
class JiraIssue:
    key: str
    url: str

    @property
    def linkable(self) -> bool:
        """Safe to render as a link: an http(s) URL with none of Slack's link delimiters."""
        return self.url.startswith(("http://", "https://")) and not set(self.url) & set("<>|")


@dataclass(frozen=True)
class CaseLinks:
    incident_id: str
    ui: str  # the Prefect UI's base URL
    flow_run_id: str | None = None
    slack: SlackThread | None = None
    jira: JiraIssue | None = None

    @classmethod
    def of(cls, incident: Incident, ui: str, flow_run_id: str | None = None) -> CaseLinks:
        slack: SlackThread | None = None
        jira: JiraIssue | None = None
        for entry in reversed(incident.timeline):  # the latest: a deleted parent is replaced by a new one
            if entry.kind != "notify":
                continue
            channel, ts = entry.data.get("slack_channel"), entry.data.get("slack_ts")
            if slack is None and isinstance(channel, str) and isinstance(ts, str):
                if SLACK_CHANNEL_ID.match(channel) and SLACK_TS.match(ts):
                    slack = SlackThread(channel, ts)
            key, url = entry.data.get("jira_key"), entry.data.get("jira_url")
            if jira is None and isinstance(key, str) and isinstance(url, str):
                jira = JiraIssue(key, url)
        return cls(incident.id, ui.rstrip("/"), flow_run_id, slack, jira)

    @property
    def pagerduty_dedup_key(self) -> str:
        """One PagerDuty alert per incident: paging twice updates it."""
        return self.incident_id

    @property
    def report_key(self) -> str:
        return report_key(self.incident_id)

    @property
    def report_url(self) -> str:
        return report_url(self.ui, self.incident_id)

    @property
    def run_url(self) -> str | None:
        return run_url(self.ui, self.flow_run_id) if self.flow_run_id else None

    @property
    def jira_key(self) -> str | None:
        """The recorded issue key, when it is a well-formed one."""
        return self.jira.key if self.jira and JIRA_ISSUE_KEY.match(self.jira.key) else None
