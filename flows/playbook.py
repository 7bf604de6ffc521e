"""The playbook runner flow: executes one spec for one incident.

Each step shows in the Prefect UI as a task run named after the step. Re-executing a run
(after a resume, a restart or a new alert) skips the steps the incident records with a
final outcome, so it picks up where it stopped, including at a waiting approval.

The run tells on-call before anything can wait for a person (the announcement), tells them
every outcome change, and ends in a state named after what it achieved, computed from the
verified outcomes only (``aisoar.outcomes``): "Contained" (Completed) or "Not contained",
"Rejected", "Expired", "Needs triage" (Failed).
"""

from __future__ import annotations

import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import Flow, flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import State
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from aisoar.actions import Effect
from aisoar.bundles import Custody
from aisoar.case import report_key, run_url
from aisoar.manifest import ManifestError
from aisoar.metrics import all_milestones, table_rows
from aisoar.models import IncidentStatus
from aisoar.outcomes import Verdict, incident_status, judge
from aisoar.report import incident_report
from aisoar.specs import ANNOUNCE_ACTION, PlaybookSpec, Step
from flows.clocks import start_clocks
from flows.services import Services, services
from flows.steps import HEAD_START, IN_RUN, Calls, run_step
from flows.tell import runner_context, tell
from tasks.base import ActionContext, Outcome, StepOutcome
from tasks.registry import REGISTRY

CLOSE_ACTION = "incident.close"
METRICS_KEY = "incident-metrics"
NOT_CONTAINED = "Not contained"  # the final state of a run that failed: a new alert runs it again


def template_context(svc: Services, spec: PlaybookSpec, incident_id: str, flow_run_id: str | None) -> dict[str, Any]:
    """What a step's templates read; ``flow_run_id`` None before the run exists (the head start)."""
    incident = svc.store.get_incident(incident_id, with_timeline=False)
    alerts = sorted(svc.store.get_alerts(incident.alert_ids), key=lambda a: a.received_at)
    picked = spec.pick_entities([entity for alert in alerts for entity in alert.entities])
    entities = {kind: entity.model_dump(mode="json") for kind, entity in picked.items()}
    ui = svc.settings.prefect_ui_url
    return {
        "alert": alerts[0].model_dump(mode="json") if alerts else {},
        "incident": {
            "id": incident.id,
            "title": incident.title,
            "severity": incident.severity.value,
            "type": incident.type.value if incident.type else None,
        },
        "entities": entities,
        "steps": {},
        "run": {"id": flow_run_id or "", "url": run_url(ui, flow_run_id) if flow_run_id else ""},
        "spec": {"name": spec.name, "title": spec.title},
    }


def playbook_flow(spec: PlaybookSpec) -> Flow[..., State[Any]]:
    """The runner as a flow named after the playbook, so Prefect's lists (the dashboard's failed
    runs, the flows page) tell playbooks apart; every playbook runs the same code. Made once per
    name and title (making a Prefect flow is dear: every run of a burst asks for it)."""
    return _named_flow(spec.name, spec.title)


@functools.lru_cache(maxsize=256)
def _named_flow(name: str, title: str) -> Flow[..., State[Any]]:
    return run_playbook.with_options(name=name, description=f"aisoar playbook: {title}")


def steps_to_run(spec: PlaybookSpec) -> list[Step]:
    """The spec's steps, with the announcement first where the spec does not place it."""
    if spec.announces:
        return list(spec.steps)
    ids = {step.id for step in spec.steps}
    step_id = "announce" if "announce" not in ids else "announce-incident"
    announce = Step.model_validate({"id": step_id, "action": ANNOUNCE_ACTION, "title": "Tell on-call"})
    return [announce, *spec.steps]


@flow(
    name="playbook",
    persist_result=False,
    log_prints=False,
    description="Runs one aisoar playbook spec for one incident.",
)
def run_playbook(incident_id: str, playbook: str, requested_by: str = "") -> State[Any]:
    """``requested_by``: who starts this run by hand (a person of the approvers directory, their
    Slack id or email); unless a gate allows it, they may not approve its steps."""
    svc = services()
    if playbook not in svc.specs:
        raise ValueError(f"no playbook named {playbook!r}; known: {sorted(svc.specs)}")
    spec = svc.specs[playbook]
    run_id = str(flow_run.get_id())
    context = template_context(svc, spec, incident_id, run_id)
    context["run"]["requested_by"] = requested_by.strip()[:256]
    results = svc.store.step_results(incident_id, spec.name)
    ahead = [s.id for s in steps_to_run(spec) if s.id in results and results[s.id].output.get(HEAD_START)]
    resumed = len(ahead) < len(results)  # a step of this run (an earlier execution) is recorded
    started = "resumed" if resumed else "running"
    if ahead and not resumed:
        started += f"; done before it was created (the head start): {', '.join(ahead)}"
    svc.store.add_timeline(incident_id, "run", f"playbook {spec.name} {started}", data={"flow_run_id": run_id})
    start_clocks(svc, incident_id, spec.name, run_id)  # before the report: it shows the deadlines
    if not resumed:
        publish_report(svc, incident_id, run_id)  # the report link in Slack and Jira works from the start
    if spec.objectives and svc.store.get_incident(incident_id, with_timeline=False).status in (
        IncidentStatus.open,
        IncidentStatus.not_contained,
    ):
        svc.store.set_incident_status(incident_id, IncidentStatus.containing)
    stopped_at: str | None = None
    together: set[str] = set()  # the steps a parallel step ran
    for step in steps_to_run(spec):
        effect = REGISTRY[step.action].info.effect
        if step.id in together:
            continue
        if stopped_at is not None and (effect is not Effect.notifies or step.action == CLOSE_ACTION):
            continue  # after a stop, only the steps that tell people still run
        if step.parallel:
            for member, outcome in run_together(
                svc, spec, step, context, incident_id, run_id, show_head_start=not resumed
            ):
                stopped_at = after_step(svc, spec, member, outcome, context, incident_id, run_id, stopped_at)
            together.update(step.parallel)
        outcome = run_step(svc, spec, step, context, incident_id, run_id, show_head_start=not resumed)
        stopped_at = after_step(svc, spec, step, outcome, context, incident_id, run_id, stopped_at)
    return finish(svc, spec, incident_id, run_id, stopped_at)


def run_together(
    svc: Services,
    spec: PlaybookSpec,
    step: Step,
    context: dict[str, Any],
    incident_id: str,
    run_id: str | None,
    *,
    calls: Calls = IN_RUN,
    show_head_start: bool = False,
) -> list[tuple[Step, StepOutcome]]:
    """The steps a parallel step names, each in a thread of its own, all at once (in a run, each
    a task run of it, as Prefect's thread pool task runner runs one: with a copy of the run's
    context); their outcomes in the spec's order once every one has ended."""
    members = [spec.step(step_id) for step_id in step.parallel]
    one = functools.partial(run_step, calls=calls, show_head_start=show_head_start)
    with ThreadPoolExecutor(max_workers=len(members), thread_name_prefix=f"aisoar-{step.id}") as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, one, svc, spec, member, context, incident_id, run_id)
            for member in members
        ]
        return [(member, future.result()) for member, future in zip(members, futures, strict=True)]


def after_step(
    svc: Services,
    spec: PlaybookSpec,
    step: Step,
    outcome: StepOutcome,
    context: dict[str, Any],
    incident_id: str,
    run_id: str,
    stopped_at: str | None,
) -> str | None:
    """What follows a step's outcome: its result for the later templates, the containment
    announced when it met the objectives, a failure told and, for a failed change, the
    playbook stopped. Returns the step the playbook stopped at, if it has."""
    get_run_logger().info("step %s: %s: %s", step.id, outcome.status.label, outcome.summary)
    remember(context, step, outcome)
    if outcome.status is Outcome.ok and any(step.id in o.any_of for o in spec.objectives):
        announce_containment(svc, spec, incident_id, run_id, step.id)
    if outcome.status not in (Outcome.failed, Outcome.refused):
        return stopped_at
    if step.action != CLOSE_ACTION:  # a refused close is what the run's end tells
        ctx = runner_context(svc, incident_id, spec.name, run_id, step.id)
        tell(
            ctx,
            f"Step {step.id} {outcome.status.label.upper()}: {outcome.summary}",
            once=f"{spec.name}/{step.id}/{outcome.status.value}@{run_id}",
        )
    # A change that failed stops the playbook; a failed notification does not stop the
    # containment (it is told in the thread, and tried again when the run runs again).
    effect = REGISTRY[step.action].info.effect
    if step.continue_on_failure or effect is Effect.notifies or stopped_at is not None:
        return stopped_at
    svc.store.add_timeline(
        incident_id,
        "error",
        f"playbook stopped at {step.id}; only the steps that tell people still run",
        step_id=step.id,
    )
    return step.id


def remember(context: dict[str, Any], step: Step, outcome: StepOutcome) -> None:
    """The step's outcome, for the templates of the steps after it (``steps['id'].field``)."""
    context["steps"][step.id] = {**outcome.output, "status": outcome.status.value, "summary": outcome.summary}


def announce_containment(svc: Services, spec: PlaybookSpec, incident_id: str, run_id: str, step_id: str) -> None:
    """The moment the containment objectives are met (verified), the incident says so and
    on-call hears it, while later steps (an approval, say) may still be waiting."""
    judged = judge(svc.store, spec, incident_id)
    incident = svc.store.get_incident(incident_id, with_timeline=False)
    if not judged.contained or incident.status not in (IncidentStatus.open, IncidentStatus.containing):
        return
    others = [v for v in verdicts_of(svc, incident_id) if v.playbook != spec.name]
    status = incident_status([judged, *others])
    if status in (IncidentStatus.open, IncidentStatus.not_contained):
        return  # another playbook of the incident has not contained its part
    svc.store.set_incident_status(incident_id, status)
    lines = "; ".join(o.line() for o in judged.objectives if o.objective.phase == "containment")
    svc.store.add_timeline(incident_id, "incident", f"contained (verified): {lines}", step_id=step_id)
    tell(
        runner_context(svc, incident_id, spec.name, run_id, step_id),
        f"CONTAINED (verified at the target): {lines}",
        once=f"{spec.name}/contained@{run_id}",
    )


def verdicts_of(svc: Services, incident_id: str) -> list[Verdict]:
    """Every playbook of the incident, judged from its recorded outcomes."""
    incident = svc.store.get_incident(incident_id, with_timeline=False)
    names = sorted(set(incident.flow_run_ids))
    judged = [judge(svc.store, svc.specs[n], incident_id) for n in names if n in svc.specs]
    return [v for v in judged if v.outcomes]  # a playbook that has not run yet says nothing


def finish(svc: Services, spec: PlaybookSpec, incident_id: str, run_id: str, stopped_at: str | None) -> State[Any]:
    """Judge the run from verified outcomes, set the incident's status, tell on-call,
    publish the report, and return the run's final state."""
    store = svc.store
    mine = judge(store, spec, incident_id)
    others = [v for v in verdicts_of(svc, incident_id) if v.playbook != spec.name]
    incident = store.get_incident(incident_id, with_timeline=False)
    if incident.status is not IncidentStatus.closed:
        status = incident_status([mine, *others])
        if status is not incident.status:
            store.set_incident_status(incident_id, status)
    incident = store.get_incident(incident_id, with_timeline=False)
    stop = f"; stopped at step {stopped_at}" if stopped_at else ""
    resolution = mine.resolution() + stop
    store.add_timeline(incident_id, "run", f"playbook {spec.name} finished: {resolution}", data={"flow_run_id": run_id})
    ctx = runner_context(svc, incident_id, spec.name, run_id, "finish")
    state = final_state(mine, incident.status, resolution)
    lines = [f"Playbook {spec.name} ended *{state.name}*: {resolution}"]
    if mine.not_done:
        lines.append("Not done: " + "; ".join(mine.not_done))
    if not mine.contained and not mine.tracked_only:
        lines.append(f"The incident stays {incident.status.value}; a responder must act. A new alert runs it again.")
    if mine.tracked_only:
        lines.append("Nothing was contained automatically: triage it by hand.")
    # one line: every message is rendered single-line in Slack and Jira
    tell(ctx, " · ".join(lines), once=f"{spec.name}/finish@{run_id}")
    sign_evidence(svc, ctx)
    publish_report(svc, incident_id, run_id, [mine, *others])
    if incident.status is IncidentStatus.closed:
        publish_metrics(svc)
    return state


def publish_metrics(svc: Services) -> None:
    """The incidents' metrics as Prefect's table artifact ``incident-metrics``, refreshed at each close."""
    try:
        rows = table_rows(all_milestones(svc.store, limit=500))
        create_table_artifact(
            table=rows,
            key=METRICS_KEY,
            description="aisoar incident metrics (the newest 500 incidents): time to detect, acknowledge, "
            "contain (verified) and recover; `aisoar metrics` averages them",
            _sync=True,  # type: ignore[call-arg]
        )
    except Exception as exc:  # metrics never stop the run
        get_run_logger().warning("could not publish the incident metrics: %s", exc)


def sign_evidence(svc: Services, ctx: ActionContext) -> None:
    """The incident's evidence manifest signed as it stands at the run's end; evidence whose
    bytes changed is not signed, and on-call is told which item."""
    try:
        manifest = Custody(svc.settings, svc.store, svc.evidence).sign(ctx.incident_id)
    except ManifestError as exc:
        svc.store.add_timeline(ctx.incident_id, "error", f"evidence manifest {exc}", step_id=ctx.step_id)
        tell(
            ctx, f"EVIDENCE CHANGED: the evidence manifest was {exc}", once=f"{ctx.playbook}/evidence@{ctx.flow_run_id}"
        )
        return
    svc.store.add_timeline(
        ctx.incident_id,
        "run",
        f"evidence manifest signed: {len(manifest['items'])} item(s), chain head {manifest['chain_head'][:16]}, "
        f"Ed25519 key {manifest['signing_key']['id']}",
        step_id=ctx.step_id,
    )


def publish_report(svc: Services, incident_id: str, run_id: str, verdicts: list[Verdict] | None = None) -> None:
    """The incident report as it stands, as a new version of the incident's report artifact,
    attached to this run (its Artifacts tab) and found by key from any link."""
    store = svc.store
    incident = store.get_incident(incident_id)
    judged = verdicts if verdicts is not None else verdicts_of(svc, incident_id)
    report = incident_report(
        incident,
        store.evidence_for(incident_id),
        store.approvals_for(incident_id),
        run_url(svc.settings.prefect_ui_url, run_id),
        judged,
        signing=Custody(svc.settings, svc.store, svc.evidence).signing(),
        clocks=store.clocks_for(incident_id),
    )
    try:
        create_markdown_artifact(
            markdown=report,
            key=report_key(incident_id),
            description=f"Incident report {incident_id} ({incident.status.value})",
            _sync=True,  # type: ignore[call-arg]
        )
    except Exception as exc:  # a report Prefect could not take never stops the containment
        get_run_logger().warning("could not publish the incident report: %s", exc)
        store.add_timeline(
            incident_id,
            "error",
            f"the incident report could not be published in Prefect ({type(exc).__name__}: {str(exc)[:300]}); "
            "it is published again at the run's next report",
        )


def final_state(mine: Verdict, status: IncidentStatus, resolution: str) -> State[Any]:
    """Green only for what was verified; otherwise a Failed state named after what happened."""
    if "planned" in mine.outcomes.values():
        return Completed(name="Planned", message=f"plan only, nothing was changed: {resolution}"[:2000])
    if mine.tracked_only:
        return Failed(name="Needs triage", message=resolution[:2000])
    if mine.contained:
        name = {IncidentStatus.eradicated: "Eradicated", IncidentStatus.recovered: "Recovered"}.get(
            mine.status, "Contained"
        )
        closed = " Incident closed." if status is IncidentStatus.closed else ""
        not_done = f" Not done: {'; '.join(mine.not_done)}." if mine.not_done else ""
        return Completed(name=name, message=f"{resolution}.{closed}{not_done}"[:2000])
    if mine.rejected():
        return Failed(name="Rejected", message=resolution[:2000])
    if mine.expired():
        return Failed(name="Expired", message=resolution[:2000])
    return Failed(name=NOT_CONTAINED, message=resolution[:2000])
