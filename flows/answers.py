"""The approval desk: what happens around an approval record, whoever answers and however.

* ``present``: a new request is posted in the incident's Slack thread with Approve / Reject
  buttons, and each allowed approver gets a one-time code by direct message (for the
  Prefect UI form or the CLI);
* ``slack_click``, ``answer_with_code``: an answer is recorded in the store first (with
  whether it counted and why not), then told (timeline, Slack thread, the request's
  message updated with who decided), then the run is woken;
* ``wake``: a decided request's run is rescheduled with retries; one Prefect refused stays
  marked in the store and the runtime's sweep tries again, so no answer is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from aisoar.approvers import ApproverDirectory
from aisoar.inert import slack_text
from aisoar.ingress.slack_actions import SlackClick
from aisoar.models import utcnow
from aisoar.store import AnswerOutcome, ApprovalRecord
from connectors.errors import NotConfigured, Planned
from flows.services import Services
from flows.tell import runner_context, tell
from tasks.base import ActionContext
from tasks.incident import failed_to_tell
from tasks.slack import APPROVE_ACTION, REJECT_ACTION, direct_message, ephemeral, update_approval_request

log = logging.getLogger("aisoar.approvals")
Waker = Callable[[ApprovalRecord], bool]  # True: woken (or nothing to wake); False: try again later


def when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def who_may(directory: ApproverDirectory, record: ApprovalRecord) -> str:
    people = ", ".join(directory.label(p) for p in record.allowed) or "nobody (no one in the approvers directory)"
    need = "one of them" if record.quorum == 1 else f"{record.quorum} different people"
    return f"{people}, as {', '.join(record.approvers)}; {need} must approve"


def request_lines(directory: ApproverDirectory, record: ApprovalRecord, title: str, summary: str) -> list[str]:
    default = "rejected: reversible containment stays" if record.on_timeout == "reject" else "approved"
    return [
        f"*Approval needed* for step `{slack_text(record.step_id, 64)}` ({slack_text(title, 200)})",
        f"*Action:* `{record.action}`: {slack_text(summary, 300)}",
        f"*Who may approve:* {slack_text(who_may(directory, record), 600)}",
        f"*Expires:* {when(record.expires_at)} (unanswered: {default})",
    ]


def status_line(directory: ApproverDirectory, record: ApprovalRecord) -> str:
    labels = [directory.label(p) for p in record.approved_by]
    if record.status == "approved":
        return f"✅ *Approved* by {slack_text(', '.join(labels), 300)} at {when(record.decided_at or utcnow())}"
    if record.decided_by == "timeout":
        default = "rejected: reversible containment stays" if record.status == "rejected" else "approved"
        return f"⌛ *Expired unanswered* at {when(record.decided_at or utcnow())}: {default} by default"
    if record.status == "rejected":
        who = directory.label(record.decided_by or "") if record.decided_by else "?"
        reason = f": {slack_text(record.reason or '', 300)}" if record.reason else ""
        return f"⛔ *Rejected* by {slack_text(who, 200)} at {when(record.decided_at or utcnow())}{reason}"
    if labels:
        return f"⏳ Approved so far by {slack_text(', '.join(labels), 300)} ({len(labels)} of {record.quorum})"
    return "⏳ Waiting for an answer"


def _state_text(directory: ApproverDirectory, record: ApprovalRecord) -> str:
    """The request's state in plain words (a notification's text)."""
    if record.decided_by == "timeout":
        return f"expired unanswered, {record.status} by default"
    if record.status == "approved":
        return "approved by " + ", ".join(directory.label(p) for p in record.approved_by)
    if record.status == "rejected":
        return f"rejected by {directory.label(record.decided_by or '?')}"
    return f"waiting ({len(record.approved_by)} of {record.quorum} approved)"


FOOTER = (
    "Only the people named can approve; a click is checked against your Slack identity. "
    "In the Prefect UI or the CLI, answer with the one-time code sent to you by direct message."
)


class AnswerDesk:
    def __init__(self, svc: Services, waker: Waker | None = None, attempts: int = 5) -> None:
        self.svc = svc
        self.directory = svc.approvers
        self.waker = waker
        self.attempts = attempts

    def context(self, record: ApprovalRecord) -> ActionContext:
        return runner_context(self.svc, record.incident_id, record.playbook, record.flow_run_id, record.step_id)

    # -- a new request -----------------------------------------------------------------------
    def send_codes(self, record: ApprovalRecord, people: list[str], why: str) -> list[str]:
        """Issue a one-time code to each of ``people`` (who has none yet) and DM it; returns
        the lines for the timeline (who got one, who could not be reached)."""
        ctx = self.context(record)
        said = []
        for person, code in self.svc.store.issue_codes(record, people).items():
            slack_id = self.directory.people[person].slack if person in self.directory.people else None
            text = (
                f"{why}\nYour one-time approval code for step `{record.step_id}` ({record.action}) of incident "
                f"{record.incident_id}: *{code}*\nIt works once, only for this exact action, until "
                f"{when(record.expires_at)}. The Approve / Reject buttons in the incident's thread need no code."
            )
            if slack_id is None:
                said.append(f"{person}: no Slack id, no code sent")
                continue
            try:
                direct_message(ctx, slack_id, text)
                said.append(f"{person}: code sent by Slack DM")
            except (NotConfigured, Planned):
                said.append(f"{person}: Slack not configured, no code sent")
            except Exception as exc:
                said.append(f"{person}: " + failed_to_tell(ctx, "Slack DM", exc))
        return said

    # -- answers -------------------------------------------------------------------------
    def record_click(self, click: SlackClick) -> Callable[[], None] | None:
        """Record a verified Slack click; return the rest of the work (telling, the message,
        a private refusal, waking the run), done after Slack has its 200."""
        if click.action_id not in (APPROVE_ACTION, REJECT_ACTION):
            return None
        approve = click.action_id == APPROVE_ACTION
        who = f"Slack user {click.user_id} (@{click.user_name})"
        try:
            person = self.directory.by_slack(click.user_id)
            outcome = self.svc.store.record_answer(
                click.approval_id,
                channel="slack",
                claimed=who,
                person=person,
                decision="approve" if approve else "reject",
                reason=f"{'Approve' if approve else 'Reject'} clicked in Slack",
                dedup_key=f"slack:{click.user_id}:{click.action_ts}",
            )
        except KeyError:
            return lambda: self._ephemeral(None, click, "This approval request does not exist (any more).")
        if outcome.duplicate:
            return None

        def follow_up() -> None:
            self.told(outcome, who, "Slack")
            if not outcome.counted:
                refusal = f"Your answer was not counted: {outcome.refusal}. It is recorded on the incident."
                self._ephemeral(outcome.record, click, refusal)

        return follow_up

    def _ephemeral(self, record: ApprovalRecord | None, click: SlackClick, text: str) -> None:
        ctx = self.context(record) if record else runner_context(self.svc, "-", "-", None, "slack")
        try:
            ephemeral(ctx, click.channel_id, click.user_id, text, click.thread_ts)
        except Exception as exc:
            log.warning("could not tell %s privately in Slack: %s", click.user_id, exc)

    def answer_with_code(
        self, record: ApprovalRecord, code: str, decision: str, reason: str, channel: str, dedup_key: str
    ) -> AnswerOutcome:
        """An answer proved by a one-time code (the Prefect UI form, the CLI)."""
        person, problem = self.svc.store.use_code(record.id, record.args_sha256, code)
        if person is not None and person not in self.directory.people:
            problem = f"{person} is no longer in the approvers directory"
        outcome = self.svc.store.record_answer(
            record.id,
            channel="cli" if channel == "cli" else "prefect-ui",
            claimed=person or "someone with a code that does not verify",
            person=person,
            decision="approve" if decision == "approve" else "reject",
            reason=reason,
            dedup_key=dedup_key,
            refusal=problem,
        )
        if not outcome.duplicate:
            via = "the CLI" if channel == "cli" else "the Prefect UI"
            self.told(outcome, person or "an answer with a wrong code", via)
        return outcome

    def told(self, outcome: AnswerOutcome, who: str, via: str) -> None:
        """Timeline, thread, the request's message; then wake the run if it was decided."""
        record, answer = outcome.record, outcome.answer
        verb = "approved" if answer is not None and answer.decision == "approve" else "rejected"
        if not outcome.counted:
            message = f"answer refused ({via}): {who} {verb} {record.action}, not counted: {outcome.refusal}"
            self.svc.store.add_timeline(record.incident_id, "approval", message, step_id=record.step_id)
            if via != "Slack":  # a refused code may be a guess: everyone on the thread hears it
                tell(self.context(record), f"Step {record.step_id}: an {message}")
            return
        if outcome.decided_now:
            self.wake(record)  # first: the run carries on while people are told
        label = self.directory.label(answer.person) if answer and answer.person else who
        reason = f": {answer.reason}" if answer and answer.reason else ""
        self.svc.store.add_timeline(
            record.incident_id,
            "approval",
            f"{verb} by {label} via {via}{reason} ({_state_text(self.directory, record)})",
            step_id=record.step_id,
            data={"person": answer.person if answer else None, "channel": via},
        )
        tell(self.context(record), f"Step {record.step_id} ({record.action}): {verb} by {label} via {via}")
        self.refresh_message(record)

    def refresh_message(self, record: ApprovalRecord, extra: str | None = None) -> None:
        """The request's Slack message shows the current state (buttons gone once decided)."""
        if record.slack_channel is None or record.slack_ts is None:
            return
        ctx = self.context(record)
        spec = self.svc.specs.get(record.playbook)
        step = next((s for s in spec.steps if s.id == record.step_id), None) if spec else None
        lines = request_lines(self.directory, record, (step.title if step else None) or record.step_id, record.action)
        lines.append(status_line(self.directory, record))
        if extra:
            lines.append(extra)
        try:
            update_approval_request(
                ctx,
                record.slack_channel,
                record.slack_ts,
                f"Approval for {record.step_id}: {_state_text(self.directory, record)}",
                lines,
                record.id,
                record.status == "pending",
                FOOTER,
            )
        except (NotConfigured, Planned):
            pass
        except Exception as exc:
            failed_to_tell(ctx, "Slack (the approval message)", exc)

    # -- waking the run --------------------------------------------------------------------
    def wake(self, record: ApprovalRecord) -> bool:
        """Wake a decided request's run, trying a few times; if Prefect keeps refusing, the
        store keeps the request marked and the runtime's sweep tries again."""
        if self.waker is None:
            return False
        for attempt in range(self.attempts):
            try:
                if self.waker(record):
                    return True
            except Exception as exc:
                log.warning("waking the run of approval %s failed (%s); trying again", record.id, exc)
            time.sleep(min(0.2 * 2**attempt, 2.0))
        return False
