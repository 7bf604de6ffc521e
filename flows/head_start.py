"""The head start: a playbook's leading evidence and reversible containment, run the moment
its incident is claimed, before its Prefect run exists.

Creating a flow run and starting Prefect's engine take longer than the evidence and the block
themselves (and much longer in a burst, where every run competes for the server), so the
runtime that holds an incident's playbook runs the spec's *lead* first, directly:

* the lead is the spec's steps from the top, in the runner's order, while each only reads or
  makes a reversible change with no approval gate; it ends at the first step that tells people
  (so a spec that does not place its announcement runs none: it is announced first), waits for
  a person, is destructive, ends the playbook or runs steps at once (a parallel step: the run
  runs them);
* each lead step runs under the runner's rules (recorded outcomes skipped, evidence first,
  every change verified by its probe) and is recorded like any step, marked ``head_start``;
* it stops at the first step that did not do its job (failed, refused): the run tries that
  step again, with its retries, and tells on-call if it fails again (a head start tried again,
  the alert's launch retried while Prefect is down, does not try it again);
* it does not depend on Prefect: with the Prefect server down the key is still blocked, and
  the alert waits in the inbox for its run;
* the run is then created and records every lead step as a task run of its own (its state
  named after the outcome, its message saying when it was done), and carries on from there.

Plan mode has no head start: a plan is the run's to make.
"""

from __future__ import annotations

import logging

from aisoar.actions import Effect
from aisoar.specs import PlaybookSpec, Step
from flows.playbook import remember, run_together, steps_to_run, template_context
from flows.services import Services
from flows.steps import DIRECT, run_step
from tasks.base import Outcome
from tasks.registry import REGISTRY

log = logging.getLogger("aisoar.head_start")
GOES_ON = frozenset({Outcome.ok, Outcome.skipped, Outcome.not_configured, Outcome.absent})


def lead(spec: PlaybookSpec) -> list[Step]:
    """The steps of the spec that may run before its run exists (a parallel step with the steps
    it runs, when each of them may)."""
    steps: list[Step] = []
    for step in steps_to_run(spec):
        if spec.parallel_of(step.id) is not None:
            continue  # its parallel step is in the lead, or ended it
        together = [spec.step(step_id) for step_id in step.parallel]
        if not all(_leads(s) for s in [step, *together]):
            break
        steps.append(step)
    return steps


def _leads(step: Step) -> bool:
    info = REGISTRY[step.action].info
    return step.approval is None and not info.ends_playbook and info.effect in (Effect.read_only, Effect.changing)


def head_start(svc: Services, spec: PlaybookSpec, incident_id: str) -> list[str]:
    """Run the lead of ``spec`` for the incident (its runtime holds the playbook run); the ids
    of the steps recorded, in order."""
    steps = [] if svc.settings.plan_mode or not svc.settings.head_start else lead(spec)
    recorded = svc.store.step_results(incident_id, spec.name)
    if not steps or any(Outcome(r.status) not in GOES_ON for r in recorded.values()):
        return []  # an earlier head start stopped (or the run went further): the run's to try
    context = template_context(svc, spec, incident_id, None)
    done: list[str] = []
    for step in steps:
        ended: list[tuple[Step, Outcome]] = []
        if step.parallel:  # its steps at once, then the step that records how they ended
            for member, outcome in run_together(svc, spec, step, context, incident_id, None, calls=DIRECT):
                remember(context, member, outcome)
                done.append(member.id)
                ended.append((member, outcome.status))
            recorded = svc.store.step_results(incident_id, spec.name)
        if all(status in GOES_ON for _, status in ended):
            outcome = run_step(svc, spec, step, context, incident_id, None, calls=DIRECT, results=recorded)
            remember(context, step, outcome)
            done.append(step.id)
            ended.append((step, outcome.status))
        stopped = [(s, status) for s, status in ended if status not in GOES_ON]
        if stopped:
            where = ", ".join(f"{s.id} ({status.label})" for s, status in stopped)
            svc.store.add_timeline(
                incident_id,
                "run",
                f"head start of {spec.name} stopped at {where}: its run tries it again",
                step_id=stopped[0][0].id,
            )
            break
    log.info("head start of %s for %s: %s", spec.name, incident_id, ", ".join(done))
    return done
