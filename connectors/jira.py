"""Jira REST v2 through the ``jira`` package.

Idempotent by design: an incident's issue is found by its label before a new one is
created; timeline comments carry a marker saying how far the timeline was posted; evidence
links are remote links with a ``globalId``, which Jira updates instead of duplicating;
closing picks the transition into the *done* status category and does nothing on an issue
that is already done.

Retries are ours, not the library's: ``ResilientSession`` runs with ``max_retries=0`` (its
own policy sleeps 10·2ⁿ s on a connection error and never retries a 500), and every call goes
through the shared ``Backoff`` policy: 429 (Retry-After honoured, capped), 5xx and
connection errors are tried again a bounded number of times; a timeout is reported as one.
Errors are built from the status and Jira's error text only; ``JIRAError``'s own text
carries the request headers (basic auth) and is never shown.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import requests
from jira import JIRA, JIRAError
from pydantic import Field, SecretStr
from urllib3.exceptions import NewConnectionError

from connectors.errors import ConnectorError, PlanGuard
from connectors.retry import RETRY_STATUSES, Backoff, Failure, with_retries
from connectors.system import StandIn, System, SystemSettings, secret

TITLE = "Jira"


class JiraSettings(SystemSettings):
    url: str | None = None
    user: str | None = None
    token: SecretStr | None = None
    project: str | None = Field(None, description="the project key issues are opened in")
ISSUE_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,30}-[1-9][0-9]{0,9}$")
PROJECT_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,30}$")
LABEL = re.compile(r"^[A-Za-z0-9_.:\-]{1,255}$")
NOT_ACTED_ON_STATUSES = frozenset({429, 503})  # Jira refused the request before acting on it
MARKER = re.compile(r"^aisoar-timeline-through: (\d{1,6})$", re.MULTILINE)
T = TypeVar("T")


class JiraTickets:
    def __init__(
        self,
        server: str,
        user: str,
        token: str,
        project: str,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: float = 0.2,
        max_backoff: float = 8.0,
        plan: bool = False,
    ) -> None:
        if not PROJECT_KEY.match(project):
            raise ValueError(f"not a Jira project key: {project[:40]!r}")
        self.project = project
        self.server = server.rstrip("/")
        self.timeout = timeout
        self.policy = Backoff(attempts, backoff, max_backoff)
        self._guard = PlanGuard(TITLE, plan)
        self._auth = (user, token)
        self._client: JIRA | None = None

    @property
    def plan(self) -> bool:
        return self._guard.plan

    def _jira(self) -> JIRA:
        """The client; connecting reads ``serverInfo``, so it is retried like any call."""
        if self._client is None:
            self._client = self._call(
                "connect",
                self.server,
                lambda: JIRA(server=self.server, basic_auth=self._auth, timeout=self.timeout, max_retries=0),
            )
        return self._client

    def _call(self, operation: str, asset: str, fn: Callable[[], T], idempotent: bool = True) -> T:
        """``fn`` with bounded retries. ``idempotent=False`` (creating an issue): tried again
        only when Jira certainly did not act on it (429, 503, a connection that could not be
        made); after a timeout or another 5xx it may have, and a second try would make a
        duplicate issue."""

        def classify(exc: Exception) -> Failure | None:
            if isinstance(exc, JIRAError):
                response = getattr(exc, "response", None)
                headers = getattr(response, "headers", None)
                retry_after = headers.get("Retry-After") if headers is not None else None
                again = exc.status_code in (RETRY_STATUSES if idempotent else NOT_ACTED_ON_STATUSES)
                return Failure(exc.status_code, _text(exc), again, retry_after)
            if isinstance(exc, requests.Timeout):
                again = idempotent or isinstance(exc, requests.ConnectTimeout)
                return Failure("timeout", f"no answer within {self.timeout}s", again)
            if isinstance(exc, requests.RequestException):
                return Failure("connection error", type(exc).__name__, idempotent or _not_sent(exc))
            return None

        return with_retries(self.policy, TITLE, operation, asset, fn, classify)

    # -- reads -----------------------------------------------------------------------------
    def check(self) -> str:
        """Reads the project: proves Jira is reachable, the credentials valid and the project visible."""
        project = self._call("read project", f"project {self.project}", lambda: self._jira().project(self.project))
        return f"Jira project {project.key} reachable as {self._auth[0]}"

    def find_by_label(self, label: str) -> str | None:
        if not LABEL.match(label):
            raise ValueError(f"not a Jira label: {label[:40]!r}")
        jql = f'project = "{self.project}" AND labels = "{label}"'
        found = self._call("search issues", label, lambda: self._jira().search_issues(jql, maxResults=1))
        return str(found[0].key) if found else None

    def status(self, issue_key: str) -> dict[str, str]:
        """The issue's status name and status category key (new, indeterminate, done)."""
        issue = self.read(issue_key)
        return {"name": issue["name"], "category": issue["category"]}

    def read(self, issue_key: str) -> dict[str, Any]:
        """The issue's status name, status category key (new, indeterminate, done) and labels."""
        _check_key(issue_key)
        issue = self._call("read issue", issue_key, lambda: self._jira().issue(issue_key, fields="status,labels"))
        status = issue.fields.status
        category = getattr(status, "statusCategory", None)
        return {
            "name": str(status.name),
            "category": str(getattr(category, "key", "") or ""),
            "labels": [str(x) for x in (getattr(issue.fields, "labels", None) or [])],
        }

    def comments(self, issue_key: str) -> list[str]:
        _check_key(issue_key)
        found = self._call("read comments", issue_key, lambda: self._jira().comments(issue_key))
        return [str(c.body) for c in found]

    def timeline_posted(self, issue_key: str) -> int:
        """How many timeline entries earlier comments covered (from their marker line)."""
        through = 0
        for body in self.comments(issue_key):
            for match in MARKER.finditer(body):
                through = max(through, int(match.group(1)))
        return through

    def remote_links(self, issue_key: str) -> list[dict[str, Any]]:
        _check_key(issue_key)
        links = self._call("read remote links", issue_key, lambda: self._jira().remote_links(issue_key))
        return [dict(link.raw) for link in links]

    def transitions(self, issue_key: str) -> list[dict[str, Any]]:
        _check_key(issue_key)
        found = self._call("read transitions", issue_key, lambda: self._jira().transitions(issue_key))
        return [t for t in found if isinstance(t, dict)]

    # -- changes ---------------------------------------------------------------------------
    def create_issue(self, summary: str, description: str, labels: list[str], priority: str | None) -> str:
        for label in labels:
            if not LABEL.match(label):
                raise ValueError(f"not a Jira label: {label[:40]!r}")
        fields: dict[str, Any] = {
            "project": {"key": self.project},
            "summary": summary,
            "description": description,
            "issuetype": {"name": "Task"},
            "labels": labels,
        }
        if priority:
            fields["priority"] = {"name": priority}
        self._guard("create issue", f"project {self.project}", f"summary: {summary[:120]}")
        client = self._jira()  # connecting is a read: retried as usual
        issue = self._call(
            "create issue", f"project {self.project}", lambda: client.create_issue(fields=fields), idempotent=False
        )
        return str(issue.key)

    def add_comment(self, issue_key: str, body: str) -> str:
        _check_key(issue_key)
        self._guard("add comment", issue_key, f"{len(body)} characters")
        comment = self._call("add comment", issue_key, lambda: self._jira().add_comment(issue_key, body))
        return str(comment.id)

    def link(self, issue_key: str, global_id: str, url: str, title: str, summary: str = "") -> None:
        """Add (or, same ``global_id``, update) a remote link on the issue."""
        _check_key(issue_key)
        if not url.startswith(("http://", "https://")):
            raise ValueError("a remote link needs an http(s) URL")
        self._guard("add remote link", issue_key, f"{title[:120]} -> {url}")
        payload: dict[str, Any] = {"url": url, "title": title[:255]}
        if summary:
            payload["summary"] = summary[:1000]

        def post() -> Any:
            # jira's add_simple_link cannot send a globalId; the session is the library's own.
            client = self._jira()
            target = client._get_url(f"issue/{quote(issue_key)}/remotelink")
            return client._session.post(target, json={"globalId": global_id, "object": payload})

        self._call("add remote link", issue_key, post)

    def transition_to_done(self, issue_key: str, name: str | None = None) -> dict[str, str]:
        """Move the issue into its *done* status category (by transition ``name`` when given).

        Returns ``{"from", "to", "transition"}``; ``transition`` is empty when the issue
        was already done.
        """
        current = self.status(issue_key)
        if current["category"] == "done":
            return {"from": current["name"], "to": current["name"], "transition": ""}
        choices = self.transitions(issue_key)
        chosen = _choose(choices, name)
        if chosen is None:
            offered = ", ".join(f"{t.get('name')} (id {t.get('id')})" for t in choices) or "none"
            wanted = f"named {name!r}" if name else "into a done status"
            raise ConnectorError(
                TITLE, "transition issue", issue_key, "no transition", f"no transition {wanted}; offered: {offered}"
            )
        transition_id = str(chosen["id"])
        target = str((chosen.get("to") or {}).get("name", "?"))
        self._guard("transition issue", issue_key, f"{current['name']} -> {target} (transition {transition_id})")
        self._call("transition issue", issue_key, lambda: self._jira().transition_issue(issue_key, transition_id))
        return {"from": current["name"], "to": target, "transition": transition_id}

    def browse_url(self, issue_key: str) -> str:
        return f"{self.server}/browse/{quote(issue_key)}"


def _choose(transitions: list[dict[str, Any]], name: str | None) -> dict[str, Any] | None:
    for transition in transitions:
        if name is not None:
            if str(transition.get("name", "")).lower() == name.lower():
                return transition
            continue
        category = ((transition.get("to") or {}).get("statusCategory") or {}).get("key")
        if category == "done":
            return transition
    return None


def _not_sent(exc: requests.RequestException) -> bool:
    """Whether the request certainly never reached Jira (the connection could not be made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, NewConnectionError)


def _check_key(issue_key: str) -> None:
    if not ISSUE_KEY.fullmatch(issue_key):
        raise ValueError(f"not a Jira issue key: {issue_key[:40]!r}")


def _text(exc: JIRAError) -> str:
    """Jira's own error text (errorMessages / errors), never the request it answered."""
    response = getattr(exc, "response", None)
    text = exc.text or (response.text if response is not None else "") or "no detail"
    return str(text)[:300]


SYSTEM = System(
    name="jira",
    title=TITLE,
    settings=JiraSettings,
    required=("url", "user", "token", "project"),
    build=lambda s, o: JiraTickets(
        str(s.url), str(s.user), secret(s.token), str(s.project), timeout=o.timeout, plan=o.plan, **o.retry
    ),
    stand_in=StandIn.fake,
    example_change=lambda c: c.create_issue("conformance", "conformance", ["aisoar-conformance"], None),
)
