"""The ``aisoar`` command: up, serve, fire, validate, actions, connectors, incidents, report, sandbox."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from aisoar.case import run_url
from aisoar.config import Settings, get_settings, reset_settings, sandbox_aliases_file, sandbox_env_file
from cli.prefect_server import QUIET_ENV
from connectors.system import StandIn
from connectors.systems import SYSTEMS

BANNER_TEXT = (
    "Nothing real is blocked, paged or filed.",
    "Configure AISOAR_* settings (see README) to use real systems.",
)


def banner(names: tuple[str, ...], servers: tuple[str, ...] = ()) -> str:
    """The box `aisoar up` prints when it runs stand-ins instead of real systems."""
    width = 66
    lines: list[str] = []
    if names:
        lines += textwrap.wrap("SANDBOX: " + ", ".join(names) + " run on local stand-ins.", width)
    if servers:
        lines += textwrap.wrap(
            "SANDBOX SERVERS: " + ", ".join(servers) + " run as real local servers (OpenBao, moto, MLflow, "
            "Chroma), seeded with what the example alerts name.",
            width,
        )
    lines += list(BANNER_TEXT)
    body = "\n".join(f"  │  {line:<{width}}│" for line in lines)
    return f"\n  ┌{'─' * (width + 2)}┐\n{body}\n  └{'─' * (width + 2)}┘\n"


def _quiet() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def _write_env_file(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("# written by `aisoar up`: sandbox stand-ins and local secrets; safe to delete\n")
        for key, value in sorted(values.items()):
            handle.write(f"{key}={value}\n")


def _unconfigured(settings: Settings, kind: StandIn) -> tuple[str, ...]:
    """The systems whose stand-in is of ``kind`` (a fake, a real local server) that have no
    settings of their own."""
    return tuple(system.name for system in SYSTEMS if system.stand_in is kind and not system.configured(settings))


def _write_aliases(path: Path, aliases: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(aliases, indent=2, sort_keys=True) + "\n")


def cmd_up(args: argparse.Namespace) -> int:
    """Prefect server (SQLite, UI) + sandbox stand-ins for what is not configured + ingress + runtime."""
    _quiet()
    from cli.prefect_server import PrefectServer

    # SIGTERM stops everything as Ctrl-C does: the servers started here (their own process
    # groups) are stopped in the `finally` blocks, never left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    sandbox_file = sandbox_env_file()
    sandbox_file.unlink(missing_ok=True)  # stand-ins are new each time; real settings win
    reset_settings()
    settings = get_settings()
    server = PrefectServer(settings.data_dir / "prefect", port=args.prefect_port)
    print(f"starting the Prefect server on {server.url} (data in {server.home}) ...", flush=True)
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url

    sandbox = None
    generated: dict[str, str] = {"AISOAR_PREFECT_UI_URL": server.url}
    if "generic" not in settings.webhook_secrets:
        generated["AISOAR_WEBHOOK_SECRETS__generic"] = secrets.token_urlsafe(32)
    missing = _unconfigured(settings, StandIn.fake)
    real_missing = _unconfigured(settings, StandIn.server)
    real = None
    if missing and not args.no_sandbox:
        from sandbox.stack import Sandbox

        sandbox = Sandbox.create()
        sandbox.seed_demo()
        generated |= sandbox.start(missing)
        generated["AISOAR_SANDBOX"] = "true"
    if real_missing and not args.no_sandbox:
        from sandbox.real_servers import RealServers, ServerFailed

        workdir = settings.data_dir / "sandbox-servers"
        shutil.rmtree(workdir, ignore_errors=True)  # seeded anew each time, like the stand-ins
        real = RealServers(workdir)
        print(f"starting the sandbox's real servers: {', '.join(real_missing)} ...", flush=True)
        try:
            generated |= real.start(real_missing)
        except BaseException as exc:
            real.stop()
            if sandbox is not None:
                sandbox.stop()
            server.stop()
            if not isinstance(exc, ServerFailed):
                raise
            print(f"error: {exc}", file=sys.stderr)
            return 1
        generated["AISOAR_SANDBOX"] = "true"
        _write_aliases(sandbox_aliases_file(), real.aliases)
    _write_env_file(sandbox_file, generated)
    os.environ.update(generated)
    reset_settings()
    settings = get_settings()
    if sandbox is not None or real is not None:
        print(banner(missing, real_missing if real is not None else ()), flush=True)
    try:
        return _serve(settings, announce=f"Prefect UI: {server.url}")
    finally:
        if sandbox is not None:
            sandbox.stop()
        if real is not None:
            real.stop()
        server.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    """Ingress + runtime against the Prefect server in PREFECT_API_URL (production, several replicas)."""
    _quiet()
    if not os.environ.get("PREFECT_API_URL"):
        print("error: set PREFECT_API_URL to the Prefect server's API, e.g. http://127.0.0.1:4200/api", file=sys.stderr)
        return 2
    return _serve(get_settings(), announce=f"Prefect API: {os.environ['PREFECT_API_URL']}")


def _serve(settings: Settings, announce: str) -> int:
    import uvicorn

    from aisoar.ingress.app import create_app
    from aisoar.ingress.dispatch import Dispatcher
    from flows.runtime import PlaybookRuntime
    from flows.services import build_services

    svc = build_services(settings)
    runtime = PlaybookRuntime(svc)
    runtime.start()
    dispatcher = Dispatcher(
        svc.store, list(svc.specs.values()), runtime, timedelta(seconds=settings.dedup_window_seconds)
    )
    app = create_app(settings, svc.store, dispatcher)
    print(
        f"aisoar is up. {announce}\n"
        f"  ingress:   http://{settings.ingress_host}:{settings.ingress_port}/webhooks/<source>\n"
        f"  playbooks: {', '.join(sorted(svc.specs))}\n"
        f"  data:      {settings.data_dir}\n"
        "  Ctrl-C stops everything.",
        flush=True,
    )
    try:
        uvicorn.run(app, host=settings.ingress_host, port=settings.ingress_port, log_level="warning")
    finally:
        runtime.stop()
    return 0


def cmd_fire(args: argparse.Namespace) -> int:
    """Sign an alert file and post it to the ingress."""
    from aisoar.ingress.auth import signed_headers

    settings = get_settings()
    secret = settings.webhook_secrets.get(args.source)
    if secret is None:
        print(
            f"error: no webhook secret for source '{args.source}'; set AISOAR_WEBHOOK_SECRETS__{args.source} "
            "(`make up` writes one for 'generic')",
            file=sys.stderr,
        )
        return 2
    body = Path(args.file).read_bytes()
    aliases_file = sandbox_aliases_file()
    if settings.sandbox and aliases_file.exists() and not args.as_is:
        from sandbox.real_servers import substitute

        try:
            alert = json.loads(body)
        except ValueError:
            alert = None
        if isinstance(alert, dict):
            alert, replaced = substitute(alert, json.loads(aliases_file.read_text()))
            if replaced:
                body = json.dumps(alert).encode()
                print(f"sandbox: the sample's ids stand for what the sandbox seeded: {', '.join(replaced)}")
    base = args.url or f"http://{settings.ingress_host}:{settings.ingress_port}"
    try:
        response = httpx.post(
            f"{base}/webhooks/{args.source}",
            content=body,
            headers=signed_headers(secret.get_secret_value(), body),
            timeout=10,
        )
    except httpx.HTTPError as exc:
        print(
            f"error: could not reach the ingress at {base} ({type(exc).__name__}); is `make up` running?",
            file=sys.stderr,
        )
        return 1
    print(f"{response.status_code} {json.dumps(response.json())}")
    if response.status_code not in (200, 202):
        return 1
    alert_id = response.json()["alert_id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = httpx.get(f"{base}/alerts/{alert_id}", timeout=5).json()
        if status.get("status") == "dispatched":
            print(f"incident {status['incident_id']}")
            for playbook, run_id in status.get("flow_runs", {}).items():
                print(f"playbook {playbook}: {run_url(settings.prefect_ui_url, run_id)}")
            return 0
        time.sleep(0.2)
    print("the alert is accepted and waits in the inbox; dispatch has not finished yet")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from aisoar.specs import SpecError, load_specs
    from tasks import catalog

    directory = Path(args.directory) if args.directory else get_settings().specs_dir
    try:
        loaded = load_specs(directory, catalog())
    except SpecError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {directory}", file=sys.stderr)
        return 1
    for item in loaded:
        print(f"ok  {item.path.name}: {item.spec.name} ({len(item.spec.steps)} steps)")
    return 0


def cmd_actions(args: argparse.Namespace) -> int:
    from tasks import REGISTRY

    for name, action in sorted(REGISTRY.items()):
        info = action.info
        extras = [f"inverse {info.inverse}"] if info.inverse else []
        extras += ["probe"] if info.has_probe else []
        extras += ["evidence"] if info.collects_evidence else []
        print(f"{name:32} {info.effect.value:12} {'; '.join(extras):40} {info.summary}")
    return 0


def cmd_connectors(args: argparse.Namespace) -> int:
    """List every connector, whether it is configured, and (--check) whether it answers."""
    from tasks.inventory import statuses

    settings = get_settings()
    failed = 0
    for status in statuses(settings, check=args.check):
        if status.reachable is None:
            mark = "ok " if status.configured else "-- "
        else:
            mark = "ok " if status.reachable else "ERR"
            failed += 0 if status.reachable else 1
        print(f"{mark} {status.name:12} {status.system:28} {status.detail}")
        if args.verbose and status.actions:
            print(f"    actions: {', '.join(status.actions)}")
    if settings.plan_mode:
        print("plan mode is on (AISOAR_PLAN_MODE): connectors describe changes and make none")
    return 1 if failed else 0


def _store() -> Any:
    from aisoar.store import Store

    return Store(get_settings().store_url)


def cmd_incidents(args: argparse.Namespace) -> int:
    for incident in _store().list_incidents(limit=args.limit):
        print(f"{incident.id}  {incident.status.value:9} {incident.severity.value:8} {incident.title[:80]!r}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from aisoar.outcomes import judge
    from aisoar.report import incident_report
    from aisoar.specs import load_specs
    from tasks import catalog

    store = _store()
    try:
        incident = store.get_incident(args.incident)
    except KeyError:
        print(f"error: no incident {args.incident}; `aisoar incidents` lists them", file=sys.stderr)
        return 1
    specs = {item.spec.name: item.spec for item in load_specs(get_settings().specs_dir, catalog())}
    verdicts = [judge(store, specs[name], incident.id) for name in sorted(incident.flow_run_ids) if name in specs]
    evidence, approvals = store.evidence_for(incident.id), store.approvals_for(incident.id)
    print(incident_report(incident, evidence, approvals, None, [v for v in verdicts if v.outcomes]))
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    """Show what the sandbox stand-ins received (Slack messages, Jira issues)."""
    from connectors.jira import SYSTEM as JIRA
    from connectors.slack import SYSTEM as SLACK

    settings = get_settings()
    if not settings.sandbox:
        print("no sandbox is running (start one with `make up`)", file=sys.stderr)
        return 1
    slack, jira = SLACK.settings_of(settings), JIRA.settings_of(settings)
    if slack.token:
        base = slack.base_url.rstrip("/").removesuffix("/api")
        replies = httpx.get(f"{base}/_sandbox/replies", timeout=5).json()
        for message in httpx.get(f"{base}/_sandbox/messages", timeout=5).json():
            print(f"slack #{slack.channel} ts={message['ts']}: {message['text']}")
            for reply in (r for r in replies if r.get("thread_ts") == message["ts"]):
                print(f"  └ {' '.join(str(reply['text']).replace(chr(0x200B), '').split())[:160]}")
    if jira.url:
        for issue in httpx.get(f"{jira.url.rstrip('/')}/_sandbox/issues", timeout=5).json():
            print(f"jira {issue['key']}: {issue['fields']['summary']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aisoar", description="SOAR for incidents in AI systems, on Prefect")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run everything locally: Prefect server + UI, ingress, runtime, sandbox")
    up.add_argument("--prefect-port", type=int, default=4200)
    up.add_argument("--no-sandbox", action="store_true", help="do not start stand-ins for unconfigured systems")
    up.set_defaults(func=cmd_up)

    sub.add_parser("serve", help="ingress + runtime against PREFECT_API_URL").set_defaults(func=cmd_serve)

    fire = sub.add_parser("fire", help="sign an alert file and post it to the ingress")
    fire.add_argument("file")
    fire.add_argument("--source", default="generic")
    fire.add_argument("--url", help="ingress base URL (default from settings)")
    fire.add_argument(
        "--as-is", action="store_true", help="send the file unchanged (no sandbox substitution of sample ids)"
    )
    fire.set_defaults(func=cmd_fire)

    validate = sub.add_parser("validate", help="check every playbook spec statically")
    validate.add_argument("directory", nargs="?")
    validate.set_defaults(func=cmd_validate)

    sub.add_parser("actions", help="list the action registry").set_defaults(func=cmd_actions)
    connectors = sub.add_parser("connectors", help="list the connectors, whether configured; --check: reachable?")
    connectors.add_argument("--check", action="store_true", help="make one authenticated read against each")
    connectors.add_argument("-v", "--verbose", action="store_true", help="also list the actions of each")
    connectors.set_defaults(func=cmd_connectors)
    incidents = sub.add_parser("incidents", help="list recent incidents")
    incidents.add_argument("--limit", type=int, default=20)
    incidents.set_defaults(func=cmd_incidents)
    report = sub.add_parser("report", help="print an incident's report")
    report.add_argument("incident")
    report.set_defaults(func=cmd_report)
    sub.add_parser("sandbox", help="show what the sandbox stand-ins received").set_defaults(func=cmd_sandbox)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
