"""Jira REST v2 through the ``jira`` package. Idempotent: an incident's issue is found by
its label before a new one is created."""

from __future__ import annotations

from typing import Any

from jira import JIRA, JIRAError

from connectors.errors import ConnectorError

SYSTEM = "Jira"


class JiraTickets:
    def __init__(self, server: str, user: str, token: str, project: str, timeout: float = 10.0) -> None:
        self.project = project
        self.server = server.rstrip("/")
        try:
            self._jira = JIRA(server=server, basic_auth=(user, token), timeout=timeout, max_retries=1)
        except JIRAError as exc:
            raise ConnectorError(SYSTEM, "connect", server, exc.status_code, _text(exc)) from None

    def find_by_label(self, label: str) -> str | None:
        try:
            found = self._jira.search_issues(f'project = "{self.project}" AND labels = "{label}"', maxResults=1)
        except JIRAError as exc:
            raise ConnectorError(SYSTEM, "search issues", label, exc.status_code, _text(exc)) from None
        return str(found[0].key) if found else None

    def create_issue(self, summary: str, description: str, labels: list[str], priority: str | None) -> str:
        fields: dict[str, Any] = {
            "project": {"key": self.project},
            "summary": summary,
            "description": description,
            "issuetype": {"name": "Task"},
            "labels": labels,
        }
        if priority:
            fields["priority"] = {"name": priority}
        try:
            issue = self._jira.create_issue(fields=fields)
        except JIRAError as exc:
            raise ConnectorError(
                SYSTEM, "create issue", f"project {self.project}", exc.status_code, _text(exc)
            ) from None
        return str(issue.key)

    def add_comment(self, issue_key: str, body: str) -> None:
        try:
            self._jira.add_comment(issue_key, body)
        except JIRAError as exc:
            raise ConnectorError(SYSTEM, "add comment", issue_key, exc.status_code, _text(exc)) from None

    def browse_url(self, issue_key: str) -> str:
        return f"{self.server}/browse/{issue_key}"


def _text(exc: JIRAError) -> str:
    response = getattr(exc, "response", None)
    text = exc.text or (response.text if response is not None else "") or "no detail"
    return str(text)[:300]
