"""``aisoar approve`` and ``aisoar approvals``: answer and list approval requests from a terminal.

The same rules as everywhere: the answer counts only with the one-time code sent to an
allowed approver; it is recorded in the store first, then the run is woken (a busy or
unreachable Prefect leaves it marked, and the runtime wakes it as soon as it can).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.terminal import Failure, say

if TYPE_CHECKING:
    from aisoar.store import ApprovalRecord
    from flows.services import Services


def register(app: typer.Typer) -> None:
    app.command("approve")(approve)
    app.command("approvals")(approvals)


def _services() -> Services:
    from aisoar.approvers import DirectoryError
    from aisoar.config import get_settings
    from flows.services import build_services

    settings = get_settings()
    _local_prefect(settings.prefect_ui_url, settings.data_dir)
    try:
        return build_services(settings)
    except DirectoryError as exc:
        raise Failure(str(exc), code=2) from None


def _local_prefect(ui_url: str, data_dir: Path) -> None:
    """Without PREFECT_API_URL / PREFECT_API_AUTH_STRING, talk to the Prefect server of this data
    dir (the one `aisoar up` runs, with its credential); set before Prefect reads its settings."""
    from cli.prefect_auth import client_problem, credential_file

    if not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_API_URL"] = ui_url.rstrip("/") + "/api"
    path = credential_file(data_dir)
    if not os.environ.get("PREFECT_API_AUTH_STRING") and path.exists():
        os.environ["PREFECT_API_AUTH_STRING"] = path.read_text(encoding="utf-8").strip()
    if problem := client_problem():
        raise Failure(problem, code=2)


def approve(
    incident: Annotated[str, typer.Argument(help="the incident id, e.g. INC-20261203-1a2b3c4d", show_default=False)],
    step: Annotated[str, typer.Argument(help="the step that waits, e.g. delete_key", show_default=False)],
    code: Annotated[str, typer.Option(help="your one-time approval code (sent to you by Slack DM)")],
    reject: Annotated[bool, typer.Option("--reject", help="reject instead of approve")] = False,
    reason: Annotated[str, typer.Option(help="why (recorded on the incident)")] = "",
) -> int:
    """Approve (or --reject) a step that waits for approval, proving who you are with your code."""
    import secrets

    from aisoar.secrets import redact_clipped
    from flows.answers import AnswerDesk

    svc = _services()
    record = _waiting(svc, incident.strip(), step.strip())
    desk = AnswerDesk(svc, waker=_prefect_waker(), attempts=3)
    outcome = desk.answer_with_code(
        record,
        code,
        "reject" if reject else "approve",
        redact_clipped(reason, {}, 2000),
        "cli",
        f"cli:{secrets.token_hex(8)}",
    )
    if not outcome.counted:
        raise Failure(f"not counted: {outcome.refusal} (the attempt is recorded on the incident)", code=3)
    now = outcome.record
    person = svc.approvers.label(now.answers[-1].person or "") if now.answers else "?"
    if now.status == "pending":
        say(f"{'Rejected' if reject else 'Approved'} by {person}; {len(now.approved_by)} of {now.quorum} so far.")
        return 0
    say(f"Step {now.step_id} of {now.incident_id} is {now.status.upper()} (by {person}).")
    if _fresh(svc, now.id).wake_pending:
        say("Prefect did not take the wake-up yet; the answer is recorded and the runtime wakes the run.")
    else:
        say("The run carries on now.")
    return 0


def _fresh(svc: Services, approval_id: str) -> ApprovalRecord:
    found = svc.store.get_approval(approval_id)
    assert found is not None
    return found


def _waiting(svc: Services, incident: str, step: str) -> ApprovalRecord:
    found = svc.store.approval_for_step(incident, step)
    if not found:
        raise Failure(f"no approval for step '{step}' of incident {incident}; `aisoar approvals` lists them", code=2)
    pending = [r for r in found if r.status == "pending"]
    if not pending:
        decided = found[-1]
        raise Failure(f"step '{step}' of {incident} was already {decided.status} by {decided.decided_by}", code=3)
    return pending[0]


def _prefect_waker() -> Callable[[ApprovalRecord], bool]:
    """Reschedule the run of a decided approval through the Prefect API (the CLI's waker)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import State
    from prefect.client.schemas.responses import OrchestrationResult, SetStateStatus
    from prefect.states import Scheduled

    def wake(record: ApprovalRecord) -> bool:
        if record.flow_run_id is None:
            return True
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(record.flow_run_id))
            if run.state is None or not run.state.is_paused():
                return True
            state: State[Any] = Scheduled(name="Resuming")
            result: OrchestrationResult[Any] = client.set_flow_run_state(run.id, state, force=True)
            return bool(result.status == SetStateStatus.ACCEPT)

    return wake


def approvals(
    incident: Annotated[str | None, typer.Argument(help="only this incident's", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="also the decided ones")] = False,
) -> int:
    """The approval requests that wait (who may answer, until when), or --all of them."""
    from flows.answers import when

    svc = _services()
    records = svc.store.approvals_for(incident) if incident else svc.store.pending_approvals()
    if not all_:
        records = [r for r in records if r.status == "pending"]
    if not records:
        say("No approval waits." if not all_ else "No approvals.")
        return 0
    from aisoar.case import run_url

    for r in records:
        status = r.status if r.status != "pending" else f"pending ({len(r.approved_by)} of {r.quorum} approved)"
        say(f"{r.incident_id}  {r.step_id}  {status}  expires {when(r.expires_at)}")
        who = ", ".join(svc.approvers.label(p) for p in r.allowed)
        link = f" · {run_url(svc.settings.prefect_ui_url, r.flow_run_id)}" if r.flow_run_id else ""
        say(f"  {r.action} · may approve: {who}{link}")
    return 0
