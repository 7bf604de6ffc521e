"""Approval records: what is asked, of whom, until when, and every answer.

The record is the source of truth; the Prefect form and the Slack buttons are views of it.
An answer is recorded here first, whichever way it came (a Slack click, a code typed in the
Prefect UI or the CLI), together with whether it counted and, if not, why. Counting happens
in the same transaction as the recording, so two answers at the same instant (from two
replicas) cannot both take the decision: quorum is distinct verified people, a verified
rejection rejects, and a decided record never changes again.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field

from aisoar import approval_codes
from aisoar.models import utcnow
from aisoar.store.schema import StoreBase, approval_answers, approval_codes_table, approvals, aware, new_id

Decision = Literal["approve", "reject"]
Channel = Literal["slack", "prefect-ui", "cli", "aisoar"]


class ApprovalAnswer(BaseModel):
    at: datetime
    channel: str
    claimed: str = Field(description="who the answer said it was from (a Slack user id, a code's owner)")
    person: str | None = Field(description="the verified person, when the identity was verified")
    decision: str
    reason: str
    counted: bool
    refusal: str | None = None


class ApprovalRecord(BaseModel):
    id: str
    incident_id: str
    playbook: str
    step_id: str
    action: str
    args_sha256: str
    approvers: list[str] = Field(description="the gate's roles and people, as the spec names them")
    allowed: list[str] = Field(default_factory=list, description="the people ids whose answers count")
    quorum: int
    expires_at: datetime
    opened_at: datetime | None = None
    on_timeout: str
    status: str
    decided_by: str | None = None
    reason: str | None = None
    decided_at: datetime | None = None
    requested_by: str | None = None
    allow_self: bool = False
    flow_run_id: str | None = None
    escalation_level: int = 0
    slack_channel: str | None = None
    slack_ts: str | None = None
    wake_pending: bool = False
    forms: dict[str, dict[str, Any]] = Field(default_factory=dict, description="pause key -> what became of it")
    answers: list[ApprovalAnswer] = Field(default_factory=list)

    @property
    def approved_by(self) -> list[str]:
        """The distinct verified people whose approvals counted, in order."""
        seen: list[str] = []
        for answer in self.answers:
            if answer.counted and answer.decision == "approve" and answer.person and answer.person not in seen:
                seen.append(answer.person)
        return seen


class AnswerOutcome(BaseModel):
    record: ApprovalRecord
    answer: ApprovalAnswer | None = Field(None, description="the answer recorded now (None: a duplicate)")
    counted: bool
    duplicate: bool = False
    refusal: str | None = None
    decided_now: bool = False


class Approvals(StoreBase):
    # -- opening -------------------------------------------------------------------------
    def open_approval(
        self,
        incident_id: str,
        playbook: str,
        step_id: str,
        action: str,
        args_sha256: str,
        approvers: list[str],
        allowed: list[str],
        quorum: int,
        timeout: timedelta,
        on_timeout: str,
        *,
        requested_by: str | None = None,
        allow_self: bool = False,
        flow_run_id: str | None = None,
    ) -> tuple[ApprovalRecord, bool]:
        """Create the approval record for a step, or return the one that exists (and False). Two
        runners asking at once (a run taken over while its first runner still ran it) get the one
        record: the step is held until the transaction ends, and the second reads the first's."""
        with self._tx() as conn:
            self._serialize(conn, f"approval:{incident_id}:{playbook}:{step_id}")
            row = conn.execute(
                sa.select(approvals.c.id).where(
                    approvals.c.incident_id == incident_id,
                    approvals.c.playbook == playbook,
                    approvals.c.step_id == step_id,
                )
            ).first()
            created = row is None
            approval_id = row.id if row is not None else new_id("APR")
            if row is None:
                now = utcnow()
                conn.execute(
                    approvals.insert().values(
                        id=approval_id,
                        incident_id=incident_id,
                        playbook=playbook,
                        step_id=step_id,
                        action=action,
                        args_sha256=args_sha256,
                        approvers_json=json.dumps(approvers),
                        allowed_json=json.dumps(allowed),
                        quorum=quorum,
                        opened_at=now,
                        expires_at=now + timeout,
                        on_timeout=on_timeout,
                        status="pending",
                        answers_json="{}",
                        requested_by=requested_by,
                        allow_self=allow_self,
                        flow_run_id=flow_run_id,
                    )
                )
            record = self._approval(conn, approval_id)
        return record, created

    def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        with self._read() as conn:
            exists = conn.execute(sa.select(approvals.c.id).where(approvals.c.id == approval_id)).first()
            return self._approval(conn, approval_id) if exists else None

    def approval_for_step(self, incident_id: str, step_id: str) -> list[ApprovalRecord]:
        """The approvals of a step of an incident (one per playbook that has that step)."""
        with self._read() as conn:
            ids = conn.execute(
                sa.select(approvals.c.id).where(approvals.c.incident_id == incident_id, approvals.c.step_id == step_id)
            ).all()
            return [self._approval(conn, r.id) for r in ids]

    # -- answers -------------------------------------------------------------------------
    def record_answer(
        self,
        approval_id: str,
        *,
        channel: Channel,
        claimed: str,
        person: str | None,
        decision: Decision,
        reason: str,
        dedup_key: str,
        refusal: str | None = None,
    ) -> AnswerOutcome:
        """Record an answer and count it if it may count; decide when it completes the quorum
        or rejects. ``refusal``: the caller already knows why it cannot count (an unknown
        identity, a wrong code); it is recorded all the same. A ``dedup_key`` seen before (a
        replayed click) changes nothing."""
        with self._tx() as conn:
            row = conn.execute(sa.select(approvals).where(approvals.c.id == approval_id).with_for_update()).first()
            if row is None:
                raise KeyError(f"no approval {approval_id}")
            seen = conn.execute(
                sa.select(approval_answers.c.seq).where(
                    approval_answers.c.approval_id == approval_id, approval_answers.c.dedup_key == dedup_key
                )
            ).first()
            if seen is not None:
                return AnswerOutcome(record=self._approval(conn, approval_id), counted=False, duplicate=True)
            record = self._approval(conn, approval_id)
            refusal = refusal or _refusal(record, person, utcnow())
            answer = ApprovalAnswer(
                at=utcnow(),
                channel=channel,
                claimed=claimed[:256],
                person=person,
                decision=decision,
                reason=reason,
                counted=refusal is None,
                refusal=refusal,
            )
            conn.execute(
                approval_answers.insert().values(
                    **answer.model_dump(), dedup_key=dedup_key[:200], approval_id=approval_id
                )
            )
            decided_now = False
            record = self._approval(conn, approval_id)
            if refusal is None:
                status: str | None = None
                if decision == "reject":
                    status, by = "rejected", person or claimed
                elif len(record.approved_by) >= record.quorum:
                    status, by = "approved", ", ".join(record.approved_by)
                if status is not None:
                    decided_now = _decide(conn, approval_id, status, by, reason, wake=True)
                    record = self._approval(conn, approval_id)
        return AnswerOutcome(
            record=record, answer=answer, counted=refusal is None, refusal=refusal, decided_now=decided_now
        )

    def note_form(self, approval_id: str, key: str, what: dict[str, Any]) -> ApprovalRecord:
        """Remember what became of a form (pause key), so a run executed again does not count
        or report it twice."""
        self.claim_form(approval_id, key, what)
        found = self.get_approval(approval_id)
        assert found is not None
        return found

    def claim_form(self, approval_id: str, key: str, what: dict[str, Any]) -> bool:
        """Note ``key`` on the record unless it is there already; whether this call noted it.
        The row is locked meanwhile, so of two executions of one run only one claims it (and
        only that one, say, posts the approval request)."""
        with self._tx() as conn:
            row = conn.execute(
                sa.select(approvals.c.answers_json).where(approvals.c.id == approval_id).with_for_update()
            ).first()
            assert row is not None
            forms = json.loads(row.answers_json or "{}")
            if key in forms:
                return False
            forms[key] = {**what, "at": str(utcnow())}
            conn.execute(approvals.update().where(approvals.c.id == approval_id).values(answers_json=json.dumps(forms)))
            return True

    def decide_approval(
        self, approval_id: str, status: str, decided_by: str, reason: str, *, wake: bool = False
    ) -> ApprovalRecord:
        """Decide a pending record (a timeout, a cancelled run, changed arguments); a record
        already decided keeps its decision."""
        with self._tx() as conn:
            _decide(conn, approval_id, status, decided_by, reason, wake=wake)
            return self._approval(conn, approval_id)

    # -- codes ---------------------------------------------------------------------------
    def issue_codes(self, record: ApprovalRecord, people: list[str]) -> dict[str, str]:
        """A one-time code for each of ``people`` who has none for this request yet."""
        issued: dict[str, str] = {}
        with self._tx() as conn:
            have = {
                r.person
                for r in conn.execute(
                    sa.select(approval_codes_table.c.person).where(approval_codes_table.c.approval_id == record.id)
                )
            }
            for person in people:
                if person in have:
                    continue
                code = approval_codes.new_code()
                conn.execute(
                    approval_codes_table.insert().values(
                        approval_id=record.id,
                        person=person,
                        digest=approval_codes.digest(record.id, record.args_sha256, person, code),
                        expires_at=record.expires_at,
                    )
                )
                issued[person] = code
        return issued

    def use_code(self, approval_id: str, args_sha256: str, code: str) -> tuple[str | None, str | None]:
        """(the person whose code this is, None) and the code spent; or (None, why not)."""
        now = utcnow()
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(approval_codes_table)
                .where(approval_codes_table.c.approval_id == approval_id)
                .with_for_update()
            ).all()
            for row in rows:
                if not approval_codes.matches(row.digest, approval_id, args_sha256, row.person, code):
                    continue
                if row.used_at is not None:
                    return None, f"the code of {row.person} was already used"
                if aware(row.expires_at) <= now:  # type: ignore[operator]
                    return None, f"the code of {row.person} expired with the request"
                codes = approval_codes_table.c
                conn.execute(
                    approval_codes_table.update()
                    .where(codes.approval_id == approval_id, codes.person == row.person)
                    .values(used_at=now)
                )
                return row.person, None
        return None, "wrong code (a code works only for its request and the exact action it was sent for)"

    # -- escalation, waking ----------------------------------------------------------------
    def advance_escalation(self, approval_id: str, level: int, add_allowed: list[str]) -> ApprovalRecord | None:
        """Move a pending record from escalation level ``level - 1`` to ``level`` (and let
        ``add_allowed`` answer too); None when another runtime did it first or it is decided."""
        with self._tx() as conn:
            row = conn.execute(sa.select(approvals).where(approvals.c.id == approval_id).with_for_update()).first()
            if row is None or row.status != "pending" or row.escalation_level != level - 1:
                return None
            allowed = json.loads(row.allowed_json or "[]")
            allowed.extend(p for p in add_allowed if p not in allowed)
            conn.execute(
                approvals.update()
                .where(approvals.c.id == approval_id)
                .values(escalation_level=level, allowed_json=json.dumps(allowed))
            )
            return self._approval(conn, approval_id)

    def set_approval_message(self, approval_id: str, channel: str, ts: str) -> None:
        with self._tx() as conn:
            conn.execute(
                approvals.update().where(approvals.c.id == approval_id).values(slack_channel=channel, slack_ts=ts)
            )

    def woken(self, approval_id: str) -> None:
        """The run of a decided record was woken (or needs no waking)."""
        with self._tx() as conn:
            conn.execute(approvals.update().where(approvals.c.id == approval_id).values(wake_pending=False))

    def to_wake(self) -> list[ApprovalRecord]:
        """Decided records whose runs have not been woken yet (a busy Prefect said no)."""
        with self._read() as conn:
            ids = conn.execute(sa.select(approvals.c.id).where(approvals.c.wake_pending.is_(True))).all()
            return [self._approval(conn, r.id) for r in ids]

    def expired_approvals(self, now: datetime) -> list[ApprovalRecord]:
        """Pending approvals past their expiry: their runs must wake up to apply the default."""
        return [a for a in self.pending_approvals() if a.expires_at <= now]

    def pending_approvals(self) -> list[ApprovalRecord]:
        """Approvals still waiting for an answer (the runtime watches their runs)."""
        with self._read() as conn:
            ids = conn.execute(sa.select(approvals.c.id).where(approvals.c.status == "pending")).all()
            return [self._approval(conn, r.id) for r in ids]

    def approvals_for(self, incident_id: str) -> list[ApprovalRecord]:
        with self._read() as conn:
            ids = conn.execute(
                sa.select(approvals.c.id).where(approvals.c.incident_id == incident_id).order_by(approvals.c.opened_at)
            ).all()
            return [self._approval(conn, r.id) for r in ids]

    def _approval(self, conn: sa.Connection, approval_id: str) -> ApprovalRecord:
        row = conn.execute(sa.select(approvals).where(approvals.c.id == approval_id)).first()
        assert row is not None
        answers = conn.execute(
            sa.select(approval_answers)
            .where(approval_answers.c.approval_id == approval_id)
            .order_by(approval_answers.c.seq)
        ).all()
        return ApprovalRecord(
            id=row.id,
            incident_id=row.incident_id,
            playbook=row.playbook,
            step_id=row.step_id,
            action=row.action,
            args_sha256=row.args_sha256,
            approvers=json.loads(row.approvers_json),
            allowed=json.loads(row.allowed_json or "[]"),
            quorum=row.quorum,
            expires_at=aware(row.expires_at),
            opened_at=aware(row.opened_at),
            on_timeout=row.on_timeout,
            status=row.status,
            decided_by=row.decided_by,
            reason=row.reason,
            decided_at=aware(row.decided_at),
            requested_by=row.requested_by,
            allow_self=bool(row.allow_self),
            flow_run_id=row.flow_run_id,
            escalation_level=row.escalation_level or 0,
            slack_channel=row.slack_channel,
            slack_ts=row.slack_ts,
            wake_pending=bool(row.wake_pending),
            forms=json.loads(row.answers_json or "{}"),
            answers=[
                ApprovalAnswer(
                    at=aware(a.at),
                    channel=a.channel,
                    claimed=a.claimed,
                    person=a.person,
                    decision=a.decision,
                    reason=a.reason,
                    counted=bool(a.counted),
                    refusal=a.refusal,
                )
                for a in answers
            ],
        )


def _refusal(record: ApprovalRecord, person: str | None, now: datetime) -> str | None:
    """Why an answer from ``person`` cannot count on ``record`` now, or None."""
    if record.status != "pending":
        return f"the request was already {record.status} (by {record.decided_by})"
    if record.expires_at <= now:
        return f"the request expired at {record.expires_at:%Y-%m-%d %H:%M:%S} UTC"
    if person is None:
        return "not a verified approver identity"
    if person not in record.allowed:
        return f"{person} is not among the approvers of this step ({', '.join(record.approvers)})"
    if person == record.requested_by and not record.allow_self:
        return f"{person} started this run and may not approve its steps (self-approval is forbidden here)"
    if any(a.counted and a.person == person for a in record.answers):
        return f"{person} has already answered; the quorum needs other people"
    return None


def _decide(conn: sa.Connection, approval_id: str, status: str, by: str, reason: str, *, wake: bool) -> bool:
    result = conn.execute(
        approvals.update()
        .where(approvals.c.id == approval_id, approvals.c.status == "pending")
        .values(status=status, decided_by=by[:256], reason=reason, decided_at=utcnow(), wake_pending=wake)
    )
    return bool(result.rowcount)
