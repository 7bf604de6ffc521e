"""Playbook runs (one per incident and playbook), the runtime's leases on them, and each step's recorded result."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel

from aisoar.models import utcnow
from aisoar.store.schema import StoreBase, aware, playbook_runs, step_results, timeline_row


class StepResult(BaseModel):
    status: str
    output: dict[str, Any]
    at: datetime


class Runs(StoreBase):
    # -- playbook runs ------------------------------------------------------------------
    def claim_playbook_run(
        self, incident_id: str, playbook: str, note: str | None = None, owner: str | None = None
    ) -> bool:
        """Record that this incident gets this playbook; False when it already has it (also
        when another dispatcher, in this process or another replica, claimed it a moment ago).
        ``note``: the timeline entry ("run") of the claim, written with it. ``owner``: the
        runner that holds the new run at once (as ``take_playbook_run`` would)."""
        now = utcnow()
        held = {"owner": owner, "heartbeat_at": now} if owner is not None else {}
        with self._tx() as conn:
            claimed = self._insert_new(
                conn, playbook_runs, incident_id=incident_id, playbook=playbook, created_at=now, finished=False, **held
            )
            if claimed and note is not None:
                conn.execute(timeline_row(incident_id, "run", note))
            return claimed

    def playbook_run_state(self, incident_id: str, playbook: str) -> tuple[str | None, bool] | None:
        """(flow run id, finished) of an incident's playbook run; None when it has none."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(playbook_runs.c.flow_run_id, playbook_runs.c.finished).where(
                    playbook_runs.c.incident_id == incident_id, playbook_runs.c.playbook == playbook
                )
            ).first()
        return (str(row.flow_run_id) if row.flow_run_id else None, bool(row.finished)) if row else None

    def reopen_run(self, incident_id: str, playbook: str, finished: bool = False) -> bool:
        """Flip an incident's playbook run between finished and not (compare-and-set): of the
        dispatchers that see a run end uncontained, exactly one runs it again."""
        with self._tx() as conn:
            result = conn.execute(
                playbook_runs.update()
                .where(
                    playbook_runs.c.incident_id == incident_id,
                    playbook_runs.c.playbook == playbook,
                    playbook_runs.c.finished.is_(not finished),
                )
                .values(finished=finished)
            )
        return bool(result.rowcount)

    def set_flow_run(self, incident_id: str, playbook: str, flow_run_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                playbook_runs.update()
                .where(playbook_runs.c.incident_id == incident_id, playbook_runs.c.playbook == playbook)
                .values(flow_run_id=flow_run_id)
            )

    def ensure_playbook_run(self, incident_id: str, playbook: str, flow_run_id: str) -> None:
        """Record a scheduled run: one started outside the dispatcher (the Prefect UI's Run
        button), or a run scheduled again (a resumed approval, the UI's Retry)."""
        if self.claim_playbook_run(incident_id, playbook):
            self.set_flow_run(incident_id, playbook, flow_run_id)
        with self._tx() as conn:
            # Claimed by a dispatch whose launch never happened: this run is the incident's run.
            conn.execute(
                playbook_runs.update()
                .where(
                    playbook_runs.c.incident_id == incident_id,
                    playbook_runs.c.playbook == playbook,
                    playbook_runs.c.flow_run_id.is_(None),
                )
                .values(flow_run_id=flow_run_id)
            )
            conn.execute(
                playbook_runs.update().where(playbook_runs.c.flow_run_id == flow_run_id).values(finished=False)
            )

    def take_playbook_run(self, incident_id: str, playbook: str, owner: str, stale_before: datetime) -> bool:
        """Become the runner of an incident's playbook unless a live runner holds it."""
        with self._tx() as conn:
            result = conn.execute(
                playbook_runs.update()
                .where(
                    playbook_runs.c.incident_id == incident_id,
                    playbook_runs.c.playbook == playbook,
                    playbook_runs.c.finished.is_(False),
                    _free_for(owner, stale_before),
                )
                .values(owner=owner, heartbeat_at=utcnow())
            )
        return bool(result.rowcount)

    def take_run(self, flow_run_id: str, owner: str, stale_before: datetime) -> bool:
        """Become the runner of a flow run unless a live runner has it (its heartbeat is fresh)."""
        with self._tx() as conn:
            result = conn.execute(
                playbook_runs.update()
                .where(
                    playbook_runs.c.flow_run_id == flow_run_id,
                    playbook_runs.c.finished.is_(False),
                    _free_for(owner, stale_before),
                )
                .values(owner=owner, heartbeat_at=utcnow())
            )
        return bool(result.rowcount)

    def heartbeat(self, owner: str, flow_run_ids: list[str], leading: Sequence[tuple[str, str]] = ()) -> None:
        """This owner still runs these flow runs, and the head starts of these (incident,
        playbook) pairs (their flow run is not created yet)."""
        if not flow_run_ids and not leading:
            return
        held: list[sa.ColumnElement[bool]] = [playbook_runs.c.flow_run_id.in_(flow_run_ids)] if flow_run_ids else []
        held += [
            sa.and_(playbook_runs.c.incident_id == incident_id, playbook_runs.c.playbook == playbook)
            for incident_id, playbook in leading
        ]
        with self._tx() as conn:
            conn.execute(
                playbook_runs.update()
                .where(playbook_runs.c.owner == owner, sa.or_(*held))
                .values(heartbeat_at=utcnow())
            )

    def release_runs(self, owner: str, flow_run_id: str | None = None) -> None:
        """Let another runner (or this one after a restart) take over at once."""
        condition = playbook_runs.c.owner == owner
        if flow_run_id is not None:
            condition = sa.and_(condition, playbook_runs.c.flow_run_id == flow_run_id)
        with self._tx() as conn:
            conn.execute(playbook_runs.update().where(condition).values(owner=None))

    def finish_run(self, flow_run_id: str) -> None:
        with self._tx() as conn:
            conn.execute(playbook_runs.update().where(playbook_runs.c.flow_run_id == flow_run_id).values(finished=True))

    def orphaned_runs(
        self, owner: str, stale_before: datetime, *, own_silent_since: datetime | None = None
    ) -> list[str]:
        """Unfinished runs that no live runner holds; with ``own_silent_since``, also those this
        owner held and has not heartbeated since then (a runtime restarted under its replica id
        takes its runs back at once; a live twin under the same name heartbeats every second)."""
        held_by_others = sa.and_(playbook_runs.c.owner != owner, playbook_runs.c.heartbeat_at < stale_before)
        holder = sa.or_(playbook_runs.c.owner.is_(None), held_by_others)
        if own_silent_since is not None:
            holder = sa.or_(
                holder, sa.and_(playbook_runs.c.owner == owner, playbook_runs.c.heartbeat_at < own_silent_since)
            )
        with self._read() as conn:
            rows = conn.execute(
                sa.select(playbook_runs.c.flow_run_id).where(
                    playbook_runs.c.flow_run_id.is_not(None), playbook_runs.c.finished.is_(False), holder
                )
            ).all()
        return [str(r.flow_run_id) for r in rows]

    def runs_without_flow_run(self, created_before: datetime) -> list[tuple[str, str]]:
        """Playbook runs selected for an incident whose flow run was never created."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(playbook_runs.c.incident_id, playbook_runs.c.playbook).where(
                    playbook_runs.c.flow_run_id.is_(None), playbook_runs.c.created_at < created_before
                )
            ).all()
        return [(r.incident_id, r.playbook) for r in rows]

    def flow_run_of(self, incident_id: str, playbook: str) -> str | None:
        with self._read() as conn:
            value = conn.execute(
                sa.select(playbook_runs.c.flow_run_id).where(
                    playbook_runs.c.incident_id == incident_id, playbook_runs.c.playbook == playbook
                )
            ).scalar()
        return str(value) if value else None

    # -- step results -------------------------------------------------------------------
    def step_result(self, incident_id: str, playbook: str, step_id: str) -> StepResult | None:
        with self._read() as conn:
            row = conn.execute(
                sa.select(step_results).where(
                    step_results.c.incident_id == incident_id,
                    step_results.c.playbook == playbook,
                    step_results.c.step_id == step_id,
                )
            ).first()
        if row is None:
            return None
        return StepResult(status=row.status, output=json.loads(row.output_json), at=aware(row.at) or utcnow())

    def step_results(self, incident_id: str, playbook: str) -> dict[str, StepResult]:
        """Every recorded step result of one playbook for one incident, by step id."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(step_results).where(
                    step_results.c.incident_id == incident_id, step_results.c.playbook == playbook
                )
            ).all()
        return {
            str(row.step_id): StepResult(
                status=row.status, output=json.loads(row.output_json), at=aware(row.at) or utcnow()
            )
            for row in rows
        }

    def record_step(
        self,
        incident_id: str,
        playbook: str,
        step_id: str,
        status: str,
        output: dict[str, Any],
        timeline: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        """Record the step's outcome and, with ``timeline`` (message, data), its timeline entry,
        in one transaction: a step is never recorded without its entry, nor the reverse."""
        with self._tx() as conn:
            if timeline is not None:
                message, data = timeline
                conn.execute(timeline_row(incident_id, "step", message, step_id, data))
            self._upsert(
                conn,
                step_results,
                ("incident_id", "playbook", "step_id"),
                incident_id=incident_id,
                playbook=playbook,
                step_id=step_id,
                status=status,
                output_json=json.dumps(output, default=str),
                at=utcnow(),
            )


def _free_for(owner: str, stale_before: datetime) -> Any:
    """A run row this owner may take: nobody holds it, it holds it, or its holder went silent."""
    return sa.or_(
        playbook_runs.c.owner.is_(None),
        playbook_runs.c.owner == owner,
        playbook_runs.c.heartbeat_at.is_(None),
        playbook_runs.c.heartbeat_at < stale_before,
    )
