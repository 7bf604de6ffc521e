"""Approval records: what is asked, of whom, until when, and the answers."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field

from aisoar.models import utcnow
from aisoar.store.schema import StoreBase, approvals, aware, new_id


class ApprovalRecord(BaseModel):
    id: str
    incident_id: str
    playbook: str
    step_id: str
    action: str
    args_sha256: str
    approvers: list[str]
    quorum: int
    expires_at: datetime
    on_timeout: str
    status: str
    decided_by: str | None = None
    reason: str | None = None
    decided_at: datetime | None = None
    answers: dict[str, dict[str, Any]] = Field(default_factory=dict, description="pause key -> answer")


class Approvals(StoreBase):
    # -- approvals ----------------------------------------------------------------------
    def open_approval(
        self,
        incident_id: str,
        playbook: str,
        step_id: str,
        action: str,
        args_sha256: str,
        approvers: list[str],
        quorum: int,
        timeout: timedelta,
        on_timeout: str,
    ) -> tuple[ApprovalRecord, bool]:
        """Create the approval record for a step, or return the one that exists (and False)."""
        with self._tx() as conn:
            row = conn.execute(
                sa.select(approvals).where(
                    approvals.c.incident_id == incident_id,
                    approvals.c.playbook == playbook,
                    approvals.c.step_id == step_id,
                )
            ).first()
            created = row is None
            if row is None:
                values = dict(
                    id=new_id("APR"),
                    incident_id=incident_id,
                    playbook=playbook,
                    step_id=step_id,
                    action=action,
                    args_sha256=args_sha256,
                    approvers_json=json.dumps(approvers),
                    quorum=quorum,
                    expires_at=utcnow() + timeout,
                    on_timeout=on_timeout,
                    status="pending",
                    answers_json="{}",
                )
                conn.execute(approvals.insert().values(**values))
                row = conn.execute(sa.select(approvals).where(approvals.c.id == values["id"])).first()
        assert row is not None
        return _approval(row), created

    def add_approval_answer(
        self, approval_id: str, key: str, approver: str, approve: bool | None, reason: str
    ) -> ApprovalRecord:
        with self._tx() as conn:
            row = conn.execute(sa.select(approvals.c.answers_json).where(approvals.c.id == approval_id)).first()
            assert row is not None
            answers = json.loads(row.answers_json)
            answers.setdefault(key, {"approver": approver, "approve": approve, "reason": reason, "at": str(utcnow())})
            conn.execute(
                approvals.update().where(approvals.c.id == approval_id).values(answers_json=json.dumps(answers))
            )
            updated = conn.execute(sa.select(approvals).where(approvals.c.id == approval_id)).first()
        assert updated is not None
        return _approval(updated)

    def expired_approvals(self, now: datetime) -> list[ApprovalRecord]:
        """Pending approvals past their expiry: their runs must wake up to apply the default."""
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(approvals).where(approvals.c.status == "pending", approvals.c.expires_at <= now)
            ).all()
        return [_approval(r) for r in rows]

    def pending_approvals(self) -> list[ApprovalRecord]:
        """Approvals still waiting for an answer (the runtime watches their runs)."""
        with self._tx() as conn:
            rows = conn.execute(sa.select(approvals).where(approvals.c.status == "pending")).all()
        return [_approval(r) for r in rows]

    def decide_approval(self, approval_id: str, status: str, decided_by: str, reason: str) -> ApprovalRecord:
        with self._tx() as conn:
            conn.execute(
                approvals.update()
                .where(approvals.c.id == approval_id, approvals.c.status == "pending")
                .values(status=status, decided_by=decided_by, reason=reason, decided_at=utcnow())
            )
            row = conn.execute(sa.select(approvals).where(approvals.c.id == approval_id)).first()
        assert row is not None
        return _approval(row)

    def approvals_for(self, incident_id: str) -> list[ApprovalRecord]:
        with self._tx() as conn:
            rows = conn.execute(sa.select(approvals).where(approvals.c.incident_id == incident_id)).all()
        return [_approval(r) for r in rows]


def _approval(row: Any) -> ApprovalRecord:
    return ApprovalRecord(
        id=row.id,
        incident_id=row.incident_id,
        playbook=row.playbook,
        step_id=row.step_id,
        action=row.action,
        args_sha256=row.args_sha256,
        approvers=json.loads(row.approvers_json),
        quorum=row.quorum,
        expires_at=aware(row.expires_at),
        on_timeout=row.on_timeout,
        status=row.status,
        decided_by=row.decided_by,
        reason=row.reason,
        decided_at=aware(row.decided_at),
        answers=json.loads(row.answers_json or "{}"),
    )
