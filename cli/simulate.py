"""`aisoar simulate`: a tabletop exercise. Each scenario's alert is read as its source sends it,
routed, and each playbook it starts is walked in plan mode against the configured (or
sandbox) systems: the path, what each step would change, who would be asked to approve and
within how long, and what is not covered. Nothing is changed, nobody is told or asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.terminal import Failure, say

if TYPE_CHECKING:
    from flows.simulate import Simulation

CLOSE_ACTION = "incident.close"
BRANCH_ACTION = "incident.branch"
PARALLEL_ACTION = "incident.parallel"

WOULD = {"ok": "reads", "planned": "would do"}


def simulate(
    files: Annotated[list[Path], typer.Argument(help="scenario alert files (JSON, as the source sends them)")],
    source: Annotated[str, typer.Option(help="the detection source whose format the files are in")] = "generic",
    as_is: Annotated[
        bool, typer.Option("--as-is", help="read the files unchanged (no sandbox substitution of sample ids)")
    ] = False,
    publish: Annotated[
        bool, typer.Option("--publish", help="also publish each plan as a Prefect markdown artifact")
    ] = False,
) -> int:
    """Walk the playbooks SCENARIO alerts would start, in plan mode: the path taken, what each
    step would change, who would approve, what is not covered. Nothing is changed."""
    from aisoar.config import get_settings

    settings = get_settings()
    if publish:  # before anything imports Prefect: it reads where its server is then
        from cli.approve import _local_prefect

        _local_prefect(settings.prefect_ui_url, settings.data_dir)
    from aisoar.ingress.adapters import PayloadError, read
    from aisoar.ingress.limits import BodyError
    from cli.main import _read_alert, _with_sandbox_ids
    from cli.sources import load
    from flows.simulate import simulate as walk_scenarios

    found = load(settings).get(source)
    if found is None:
        raise Failure(f"no source '{source}'; `aisoar sources list` shows them", code=2)
    alerts = []
    for file in files:
        body = _read_alert(file)
        if settings.sandbox and not as_is and found.format.mapping is None:
            body = _with_sandbox_ids(body)
        try:
            reading = read(found.format, found.name, body, {})
        except BodyError as exc:
            raise Failure(f"{file}: {exc}", code=2) from None
        except PayloadError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(body)'}: {e['msg']}" for e in exc.errors)
            raise Failure(f"{file} does not fit source '{source}': {problems}", code=2) from None
        alerts.extend(reading.alerts)
    if not alerts:
        raise Failure("the scenario holds no alert to simulate", code=2)
    plans = walk_scenarios(settings, alerts)
    for number, simulation in enumerate(plans):
        say(("\n" if number else "") + render(simulation))
        if publish:
            _publish(simulation.alert.id, render(simulation, markdown=True))
    return 0


def render(simulation: Simulation, markdown: bool = False) -> str:
    """The plan as text for the terminal, or as markdown with every value escaped (alert text
    is inert either way: the terminal drops control characters, markdown is escaped)."""
    from aisoar.clocks import duration
    from aisoar.inert import markdown_quote, markdown_text

    def esc(text: str) -> str:
        return markdown_text(text) if markdown else text

    alert = simulation.alert
    kind = alert.incident_type.value if alert.incident_type else "no type"
    title = markdown_quote(alert.title) if markdown else json.dumps(alert.title, ensure_ascii=False)
    lines = [f"# Simulation of alert {esc(alert.id)} ({alert.severity.value}, {kind})", f"title: {title}"]
    note = simulation.routing.note(alert)
    if not simulation.playbooks:
        lines.append("no playbook would start")
    if note:
        lines.append(f"routing: {esc(note)}")
    for deadline in simulation.deadlines:
        lines.append(
            f"regulatory clock: {deadline.regime}: {esc(deadline.what)} within {duration(deadline.seconds)} "
            f"of awareness ({esc(deadline.why)})"
        )
    for plan in simulation.playbooks:
        lines += ["", f"## Playbook {plan.spec.name}: {esc(plan.spec.title)}", ""]
        for number, step in enumerate(plan.steps, 1):
            item = f"- {number}\\." if markdown else f"{number}."  # the UI's numbered lists cut at two digits
            if step.step.action == CLOSE_ACTION:
                lines.append(f"{item} {step.step.id} [closes the incident once every objective is met, verified]")
                continue
            if step.step.action == PARALLEL_ACTION:
                lines.append(f"{item} {step.step.id} [at once] {esc(', '.join(step.step.parallel))}:")
                continue
            decides = step.step.action == BRANCH_ACTION and step.on_path
            shown = "decides" if decides else WOULD.get(step.outcome.status.value, step.outcome.status.label.lower())
            indent = "   " if plan.spec.parallel_of(step.step.id) else ""  # one of the steps run at once
            lines.append(f"{indent}{item} {step.step.id} [{shown}] {esc(step.outcome.summary)}")
            if step.approval and step.on_path:
                lines.append(f"    - approval: {step.approval}")
        lines += ["", "path: " + " -> ".join(plan.path)]
        for objective in plan.spec.objectives:
            by = [s for s in objective.any_of if s in plan.path]
            met = f"would be met by {', '.join(by)} once done and verified" if by else "would NOT be met"
            lines.append(f"objective {esc(objective.title)}: {met}")
        gaps = plan.not_covered()
        lines.append("not covered: " + ("nothing" if not gaps else ""))
        lines += [f"  - {esc(gap)}" for gap in gaps]
    return ("  \n" if markdown else "\n").join(lines)


def _publish(alert_id: str, text: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    key = "simulation-" + "".join(c if c.isalnum() else "-" for c in alert_id.lower())[:80]
    artifact = ArtifactCreate(key=key, type="markdown", data=text, description=f"aisoar simulate: alert {alert_id}")
    try:
        with get_client(sync_client=True) as client:  # the API itself: no client-side event left queued at exit
            client.request("POST", "/artifacts/", json=artifact.model_dump(mode="json", exclude_unset=True))
    except Exception as exc:
        raise Failure(f"could not publish the plan to Prefect ({type(exc).__name__}: {exc})") from exc
    say(f"published as Prefect artifact {key}")
