"""The playbook runner flow: executes one spec for one incident.

Each step shows in the Prefect UI as a task run named after the step. Re-executing a run
(after a restart) skips the steps the incident already records, so it picks up where it
stopped, including at a waiting approval.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from aisoar.specs import PlaybookSpec
from flows.services import Services, services
from flows.steps import run_step
from tasks.base import Outcome


class StepFailed(RuntimeError):
    pass


def template_context(svc: Services, spec: PlaybookSpec, incident_id: str, flow_run_id: str) -> dict[str, Any]:
    incident = svc.store.get_incident(incident_id)
    alerts = [svc.store.get_alert(alert_id) for alert_id in incident.alert_ids]
    entities: dict[str, Any] = {}
    for alert in alerts:
        for entity in alert.entities:
            entities.setdefault(entity.type, entity.model_dump(mode="json"))
    ui = svc.settings.prefect_ui_url.rstrip("/")
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
        "run": {"id": flow_run_id, "url": f"{ui}/runs/flow-run/{flow_run_id}"},
        "spec": {"name": spec.name, "title": spec.title},
    }


@flow(
    name="playbook",
    persist_result=False,
    log_prints=False,
    description="Runs one aisoar playbook spec for one incident.",
)
def run_playbook(incident_id: str, playbook: str) -> dict[str, str]:
    svc = services()
    logger = get_run_logger()
    if playbook not in svc.specs:
        raise ValueError(f"no playbook named {playbook!r}; known: {sorted(svc.specs)}")
    spec = svc.specs[playbook]
    run_id = str(flow_run.get_id())
    context = template_context(svc, spec, incident_id, run_id)
    resumed = any(svc.store.step_result(incident_id, spec.name, step.id) for step in spec.steps)
    svc.store.add_timeline(
        incident_id, "run", f"playbook {spec.name} {'resumed' if resumed else 'running'}", data={"flow_run_id": run_id}
    )
    statuses: dict[str, str] = {}
    for step in spec.steps:
        outcome = run_step(svc, spec, step, context, incident_id, run_id)
        context["steps"][step.id] = {**outcome.output, "status": outcome.status.value, "summary": outcome.summary}
        statuses[step.id] = outcome.status.value
        logger.info("step %s: %s", step.id, outcome.summary)
        if outcome.status is Outcome.failed and not step.continue_on_failure:
            svc.store.add_timeline(incident_id, "error", f"playbook stopped at {step.id}", step_id=step.id)
            raise StepFailed(f"step {step.id} failed: {outcome.summary}")
    svc.store.add_timeline(incident_id, "run", f"playbook {spec.name} finished")
    return statuses
