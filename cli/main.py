"""The ``aisoar`` command: up, serve, fire, sources, validate, actions, connectors, incidents, report,
sandbox.

Each command imports what it needs when it runs: the command starts fast, and a package of
another distribution that shadows one of this project's is named before anything imports it."""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import textwrap
import time
from contextlib import ExitStack, nullcontext
from datetime import timedelta
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import approve, cacao, evidence, sources
from cli.prefect_tls import skip_unused_tls_roots
from cli.simulate import simulate as simulate_command
from cli.terminal import Failure, PipeClosed, complain, is_terminal, say, spinner, table, working

if TYPE_CHECKING:
    import httpx

    from aisoar.actions import ActionInfo
    from aisoar.config import Settings
    from aisoar.ingress.processes import WebhookProcesses
    from aisoar.store import Store
    from cli.prefect_auth import Credential
    from cli.prefect_server import PrefectServer
    from connectors.system import StandIn
    from tasks.inventory import ConnectorStatus

PROJECT_PACKAGES = ("flows", "tasks", "connectors", "cli", "sandbox")
SANDBOX_APPROVERS = Path(__file__).resolve().parent.parent / "sandbox" / "approvers.yaml"
SANDBOX_ASSETS = Path(__file__).resolve().parent.parent / "sandbox" / "assets.yaml"
BANNER_TEXT = (
    "Nothing real is blocked, paged or filed.",
    "Configure AISOAR_* settings (see README) to use real systems.",
)
EFFECT_STYLES = {"read_only": "green", "notifies": "cyan", "changing": "yellow", "destructive": "bold red"}
MARK_STYLES = {"ok": "green", "--": "dim", "ERR": "bold red"}
STATUS_STYLES = {"open": "yellow", "containing": "yellow", "not contained": "bold red"}
SEVERITY_STYLES = {"critical": "bold red", "high": "red", "medium": "yellow"}

app = typer.Typer(
    name="aisoar",
    help="SOAR for incidents in AI systems, on Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(sources.app, name="sources")
app.add_typer(cacao.app, name="cacao")
approve.register(app)


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
    from cli.prefect_server import QUIET_ENV

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
    from connectors.systems import SYSTEMS

    return tuple(system.name for system in SYSTEMS if system.stand_in is kind and not system.configured(settings))


def _write_aliases(path: Path, aliases: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(aliases, indent=2, sort_keys=True) + "\n")


@app.command("up")
def cmd_up(
    prefect_port: Annotated[int, typer.Option(min=1, max=65535, help="port of the Prefect server and its UI")] = 4200,
    no_sandbox: Annotated[
        bool, typer.Option("--no-sandbox", help="do not start stand-ins for unconfigured systems")
    ] = False,
) -> int:
    """Run everything locally: Prefect server + UI, ingress, runtime, sandbox."""
    _quiet()
    from aisoar.config import get_settings, reset_settings, sandbox_env_file

    _exit_on_sigterm()  # the servers started here (their own process groups) are stopped when `running` closes

    sandbox_file = sandbox_env_file()
    sandbox_file.unlink(missing_ok=True)  # stand-ins are new each time; real settings win
    reset_settings()
    settings = get_settings()
    login = _prefect_credential(settings.data_dir)
    with ExitStack() as running:
        server = _start_prefect(local_prefect_server(settings.data_dir, login, prefect_port), running)
        generated = {"AISOAR_PREFECT_UI_URL": server.url, **sources.generated_secrets(settings)}
        if not no_sandbox:
            generated |= _start_sandbox(settings, running)
            if not settings.approvers_file.exists() and "AISOAR_APPROVERS_FILE" not in os.environ:
                # The sandbox's people (in its Slack stand-in) approve, until approvers.yaml names yours.
                generated["AISOAR_APPROVERS_FILE"] = str(SANDBOX_APPROVERS)
            if not settings.assets_file.exists() and "AISOAR_ASSETS_FILE" not in os.environ:
                generated["AISOAR_ASSETS_FILE"] = str(SANDBOX_ASSETS)  # the examples start their clocks
        _write_env_file(sandbox_file, generated)
        os.environ.update(generated)
        reset_settings()
        announce = (
            f"Prefect UI: {server.url} (locked: log in there first)\n"
            f"  UI login:  the whole line of {login.path} ({login.user}:<password>); asked once per browser"
        )
        return _serve(get_settings(), announce=announce)


def _exit_on_sigterm() -> None:
    """SIGTERM (systemd, a container runtime, `kill`) stops the command as Ctrl-C does: it raises
    SystemExit(143), so every ``finally`` and ExitStack cleanup runs (the runtime releases its
    runs, `up` stops the servers it started). uvicorn takes SIGTERM while it serves, shuts down,
    then raises it again under the handler it found (uvicorn/server.py, ``capture_signals``):
    under the default handler the process would die right there, before any cleanup."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def _prefect_credential(data_dir: Path) -> Credential:
    """The local Prefect server's credential (made on the first start, then reused)."""
    from cli.prefect_auth import CredentialError, credential

    try:
        login = credential(data_dir)
    except (CredentialError, OSError) as exc:
        raise Failure(str(exc)) from exc
    if login.replaced:
        say(login.replaced, style="yellow")
    return login


def local_prefect_server(data_dir: Path, login: Credential, port: int) -> PrefectServer:
    """The Prefect server `aisoar up` starts: its data in ``<data_dir>/prefect``, locked with
    ``login``."""
    from cli.prefect_server import PrefectServer

    return PrefectServer(data_dir / "prefect", auth_string=login.auth_string, port=port)


def _start_prefect(server: PrefectServer, running: ExitStack) -> PrefectServer:
    """Start the local Prefect server, this process's API from now on; ``running`` stops it."""
    assert server.auth_string is not None, "aisoar up never starts an open Prefect server"
    # This process's Prefect client: set before anything imports Prefect (it reads its settings then).
    os.environ["PREFECT_API_URL"] = server.api_url
    os.environ["PREFECT_API_AUTH_STRING"] = server.auth_string
    skip_unused_tls_roots()
    _refuse_cloud_key()
    running.callback(server.stop)
    with working(f"starting the Prefect server on {server.url} (data in {server.home})"):
        try:
            server.start()
        except (RuntimeError, TimeoutError) as exc:  # the port is taken; the server died or hangs
            raise Failure(str(exc)) from exc
    return server


def _refuse_cloud_key() -> None:
    from cli.prefect_auth import client_problem

    problem = client_problem()
    if problem:
        raise Failure(problem, code=2)


def _start_sandbox(settings: Settings, running: ExitStack) -> dict[str, str]:
    """Stand-ins for the systems that have no settings of their own, and the banner that says so;
    their settings. ``running`` stops them."""
    from connectors.system import StandIn

    fakes = _unconfigured(settings, StandIn.fake)
    servers = _unconfigured(settings, StandIn.server)
    generated: dict[str, str] = {}
    if fakes:
        generated |= _start_stand_ins(fakes, running, settings)
    if servers:
        generated |= _start_real_servers(servers, settings.data_dir, running)
    if generated:
        say(banner(fakes, servers), style="yellow")
    return generated


def _start_stand_ins(names: tuple[str, ...], running: ExitStack, settings: Settings) -> dict[str, str]:
    """Start the sandbox's stand-ins for ``names``; ``running`` stops them. The Slack stand-in's
    button clicks go to this ingress, as a Slack app's Request URL says."""
    from sandbox.stack import SLACK_INTERACTIVITY_PATH, Sandbox

    sandbox = Sandbox.create()
    running.callback(sandbox.stop)
    sandbox.seed_demo()
    sandbox.set_slack_request_url(f"http://{settings.ingress_host}:{settings.ingress_port}{SLACK_INTERACTIVITY_PATH}")
    return sandbox.start(names) | {"AISOAR_SANDBOX": "true"}


def _start_real_servers(names: tuple[str, ...], data_dir: Path, running: ExitStack) -> dict[str, str]:
    """Start and seed the real local servers for ``names``; ``running`` stops them."""
    from aisoar.config import sandbox_aliases_file
    from sandbox.real_servers import RealServers, ServerFailed

    workdir = data_dir / "sandbox-servers"
    shutil.rmtree(workdir, ignore_errors=True)  # seeded anew each time, like the stand-ins
    real = RealServers(workdir)
    running.callback(real.stop)
    with working(f"starting the sandbox's real servers: {', '.join(names)}"):
        try:
            generated = real.start(names)
        except ServerFailed as exc:
            raise Failure(str(exc)) from exc
    _write_aliases(sandbox_aliases_file(), real.aliases)
    return generated | {"AISOAR_SANDBOX": "true"}


@app.command("serve")
def cmd_serve() -> int:
    """Ingress + runtime against the Prefect server in PREFECT_API_URL (production, several replicas)."""
    _quiet()
    _exit_on_sigterm()  # its runs are released on the way out: another replica takes them over at once
    if not os.environ.get("PREFECT_API_URL"):
        raise Failure("set PREFECT_API_URL to the Prefect server's API, e.g. http://127.0.0.1:4200/api", code=2)
    skip_unused_tls_roots()  # before Prefect is imported: it reads its settings then
    from aisoar.config import get_settings
    from cli.prefect_auth import CredentialError, api_access, configured_auth_string

    _refuse_cloud_key()
    api_url = os.environ["PREFECT_API_URL"]
    try:
        access = api_access(api_url, configured_auth_string())
    except CredentialError as exc:
        raise Failure(str(exc), code=2) from exc
    if access == "open":
        say(
            f"the Prefect server at {api_url} takes requests without credentials: anyone who reaches it can "
            "resume approvals; set PREFECT_SERVER_API_AUTH_STRING on it (deployments/README.md)",
            style="yellow",
        )
    return _serve(get_settings(), announce=f"Prefect API: {api_url}")


def _serve(settings: Settings, announce: str) -> int:
    known = sources.load(settings)  # a wrong source file stops the start, naming the file
    with working("starting the playbook runtime"):
        import uvicorn

        from aisoar.approvers import DirectoryError
        from aisoar.ingress.app import create_app
        from aisoar.ingress.dispatch import Dispatcher
        from flows.replica_id import ReplicaIdInUse
        from flows.runtime import PlaybookRuntime
        from flows.services import build_services

        if settings.replica_id is None:
            # Stable across restarts: a restarted `aisoar up`/`serve` takes back its own runs at once.
            settings = settings.model_copy(update={"replica_id": f"{socket.gethostname()}:{settings.ingress_port}"})
        try:
            svc = build_services(settings)
        except DirectoryError as exc:
            hint = "(approvers.example.yaml shows the file; AISOAR_APPROVERS_FILE names it)"
            raise Failure(f"{exc}\n{hint}", 2) from None
        from aisoar.bundles import Custody
        from aisoar.manifest import public_path

        signer = Custody(settings, svc.store, svc.evidence)  # its key made here the first time
        runtime = PlaybookRuntime(svc)
        try:
            runtime.start()
        except ReplicaIdInUse as exc:
            raise Failure(str(exc), 2) from None
    webhooks: WebhookProcesses | None = None
    try:
        if settings.ingress_processes:
            webhooks = _webhook_processes(settings, svc.store)
        dispatcher = Dispatcher(
            svc.store,
            list(svc.specs.values()),
            runtime,
            timedelta(seconds=settings.dedup_window_seconds),
            owner=runtime.owner,
            lease=runtime.stale_after,
        )
        ingress = create_app(
            settings,
            svc.store,
            dispatcher,
            known,
            desk=runtime.desk,
            evidence=svc.evidence,
            prefect_problem=runtime.prefect_problem,
            webhook_processes=webhooks,
        )
        ready = sorted(name for name, source in known.items() if source.missing is None)
        base = f"http://{settings.ingress_host}:{settings.ingress_port}"
        buttons = (
            f"Slack buttons answer at {base}/slack/interactivity"
            if settings.slack_signing_secret
            else "Slack buttons are off (no AISOAR_SLACK_SIGNING_SECRET); codes by DM still work"
        )
        say(
            f"aisoar is up. {announce}\n"
            f"  ingress:   {base}/webhooks/<source>"
            + (f" ({settings.ingress_processes} webhook processes)\n" if webhooks else "\n")
            + f"  sources:   {', '.join(ready) or 'none has its secret yet (aisoar sources list)'}\n"
            f"  playbooks: {', '.join(sorted(svc.specs))}\n"
            f"  approvers: {len(svc.approvers.people)} people in {settings.approvers_file}; {buttons}\n"
            f"  data:      {settings.data_dir}\n"
            f"  evidence:  signed with {signer.key_line()} (public key {public_path(settings.data_dir)})\n"
            "  Ctrl-C stops everything."
        )
        _freeze_start_up()
        if webhooks is None:
            uvicorn.run(ingress, host=settings.ingress_host, port=settings.ingress_port, log_level="warning")
        else:  # the webhook processes accept on the port; they pass the rest on to this socket
            uvicorn.run(ingress, uds=str(webhooks.main_socket), log_level="warning")
    finally:
        runtime.stop()
        if webhooks is not None:
            webhooks.listener.close()
            shutil.rmtree(webhooks.main_socket.parent, ignore_errors=True)
    return 0


def _webhook_processes(settings: Settings, store: Store) -> WebhookProcesses:
    """The ingress port, bound here for the webhook processes to accept on, and the private
    folder of this process's own socket (only this user can reach it)."""
    from aisoar.ingress.processes import WebhookProcesses

    try:
        family = socket.AF_INET6 if ":" in settings.ingress_host else socket.AF_INET
        listener = socket.create_server((settings.ingress_host, settings.ingress_port), family=family, backlog=2048)
    except OSError as exc:
        raise Failure(f"cannot listen on {settings.ingress_host}:{settings.ingress_port}: {exc.strerror}") from None
    listener.set_inheritable(True)
    private = Path(tempfile.mkdtemp(prefix="aisoar-"))  # mode 0700
    return WebhookProcesses(settings.ingress_processes, listener, private / "main.sock", store)


def _freeze_start_up() -> None:
    """What start-up made (Prefect, the app, the playbooks: most of the process's objects) lives
    as long as the process: out of the garbage collector's reach, a full collection looks only at
    what came after. Without it a full collection took up to 160 ms in a storm, every sender
    waiting meanwhile."""
    gc.collect()
    gc.freeze()


@app.command("fire")
def cmd_fire(
    file: Annotated[Path, typer.Argument(help="the alert: a JSON file", show_default=False)],
    source: Annotated[str, typer.Option(help="the detection source; its credentials sign the alert")] = "generic",
    url: Annotated[str | None, typer.Option(help="ingress base URL (default: from the settings)")] = None,
    event: Annotated[
        str | None, typer.Option(help="the event header's value, for sources that take one (GitHub: X-GitHub-Event)")
    ] = None,
    as_is: Annotated[
        bool, typer.Option("--as-is", help="send the file unchanged (no sandbox substitution of sample ids)")
    ] = False,
) -> int:
    """Post an alert file to the ingress as SOURCE sends it (its auth scheme, its headers)."""
    import httpx

    from aisoar.config import get_settings
    from aisoar.ingress.auth import sender_headers

    body = _read_alert(file)
    settings = get_settings()
    found = sources.load(settings).get(source)
    if found is None:
        raise Failure(f"no source '{source}'; `aisoar sources list` shows them", code=2)
    if found.credentials is None:
        raise Failure(f"source '{source}' cannot send yet: {found.missing} (`make up` makes one)", code=2)
    if settings.sandbox and not as_is and found.format.mapping is None:
        body = _with_sandbox_ids(body)
    headers = sender_headers(found.credentials, body)
    mapping = found.format.mapping
    if mapping is not None and mapping.event is not None:
        headers[mapping.event.header] = event or mapping.event.accept[0]
    reader = (
        {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}
        if settings.api_token
        else sender_headers(found.credentials, b"")
    )
    base = url or f"http://{settings.ingress_host}:{settings.ingress_port}"
    try:
        response = httpx.post(f"{base}/webhooks/{source}", content=body, headers=headers, timeout=10)
        accepted = _json(response, base)
        say(f"{response.status_code} {json.dumps(accepted)}")
        if response.status_code not in (200, 202):
            return 1
        for alert_id in accepted.get("alert_ids", []):
            _follow(base, alert_id, settings.prefect_ui_url, reader)
    except httpx.HTTPError as exc:
        raise Failure(f"could not reach the ingress at {base} ({type(exc).__name__}); is `make up` running?") from exc
    return 0


def _read_alert(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise Failure(f"cannot read the alert file {file}: {exc.strerror or exc}", code=2) from exc


def _with_sandbox_ids(body: bytes) -> bytes:
    """The alert with the identifiers the sandbox seeded in place of the sample's, saying so."""
    from aisoar.config import sandbox_aliases_file

    aliases_file = sandbox_aliases_file()
    if not aliases_file.exists():
        return body
    from sandbox.real_servers import substitute

    try:
        alert = json.loads(body)
    except ValueError:
        return body  # not JSON: the ingress says so
    if not isinstance(alert, dict):
        return body
    alert, replaced = substitute(alert, json.loads(aliases_file.read_text()))
    if not replaced:
        return body
    say(f"sandbox: the sample's ids stand for what the sandbox seeded: {', '.join(replaced)}")
    return json.dumps(alert).encode()


def _json(response: httpx.Response, base: str) -> Any:
    """The JSON an ``httpx.Response`` of the ingress carries."""
    try:
        return response.json()
    except ValueError as exc:
        raise Failure(f"{base} answered HTTP {response.status_code} without JSON; is it aisoar's ingress?") from exc


def _follow(base: str, alert_id: str, prefect_ui_url: str, headers: dict[str, str]) -> None:
    """Wait (10 s at most) until the alert is dispatched; print its incident and playbook runs."""
    import httpx

    from aisoar.case import run_url

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = _json(httpx.get(f"{base}/alerts/{alert_id}", headers=headers, timeout=5), base)
        if status.get("status") == "dispatched":
            if status.get("incident_id") is None:
                say(f"alert {alert_id}: {status.get('error') or 'no incident'}")
                return
            say(f"incident {status['incident_id']}")
            for playbook, run_id in status.get("flow_runs", {}).items():
                say(f"playbook {playbook}: {run_url(prefect_ui_url, run_id)}")
            return
        time.sleep(0.2)
    say("the alert is accepted and waits in the inbox; dispatch has not finished yet")


app.command("simulate")(simulate_command)


@app.command("validate")
def cmd_validate(
    directory: Annotated[
        Path | None, typer.Argument(help="the specs' directory (default: AISOAR_SPECS_DIR)", show_default=False)
    ] = None,
) -> int:
    """Check every playbook spec statically."""
    from aisoar.config import get_settings
    from aisoar.specs import SpecError, load_specs
    from tasks import catalog

    directory = directory or get_settings().specs_dir
    if not directory.is_dir():
        raise Failure(f"no such directory: {directory}", code=2)
    try:
        loaded = load_specs(directory, catalog())
    except SpecError as exc:
        for problem in exc.problems:
            complain(str(problem), prefix="")
        complain(f"{len(exc.problems)} problem(s) in {directory}", prefix="")
        return 1
    for item in loaded:
        say(f"ok  {item.path.name}: {item.spec.name} ({len(item.spec.steps)} steps)", style="green")
    return 0


@app.command("actions")
def cmd_actions() -> int:
    """List the action registry: effect, inverse, probe, evidence."""
    from tasks import REGISTRY

    rows = [(name, a.info.effect.value, _extras(a.info), a.info.summary) for name, a in sorted(REGISTRY.items())]
    if is_terminal():
        table(("action", "effect", "inverse / probe / evidence", "summary"), rows, styles=({}, EFFECT_STYLES))
        return 0
    for name, effect, extras, summary in rows:
        say(f"{name:32} {effect:12} {extras:40} {summary}")
    return 0


def _extras(info: ActionInfo) -> str:
    extras = [f"inverse {info.inverse}"] if info.inverse else []
    extras += ["probe"] if info.has_probe else []
    extras += ["evidence"] if info.collects_evidence else []
    return "; ".join(extras)


@app.command("connectors")
def cmd_connectors(
    check: Annotated[bool, typer.Option("--check", help="make one authenticated read against each")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="also list the actions of each")] = False,
) -> int:
    """List the connectors, whether configured; --check: whether each answers."""
    from aisoar.config import get_settings
    from tasks.inventory import statuses

    settings = get_settings()
    if is_terminal():
        with spinner("checking the connectors") if check else nullcontext():
            listed = list(statuses(settings, check=check))
        _connector_table(listed, verbose)
    else:
        listed = []
        for status in statuses(settings, check=check):  # one line as each is checked
            listed.append(status)
            say(f"{_mark(status)} {status.name:12} {status.system:28} {status.detail}")
            if verbose and status.actions:
                say(f"    actions: {', '.join(status.actions)}")
    if settings.plan_mode:
        say("plan mode is on (AISOAR_PLAN_MODE): connectors describe changes and make none", style="yellow")
    return 1 if any(status.reachable is False for status in listed) else 0


def _mark(status: ConnectorStatus) -> str:
    if status.reachable is None:
        return "ok " if status.configured else "-- "
    return "ok " if status.reachable else "ERR"


def _connector_table(listed: list[ConnectorStatus], verbose: bool) -> None:
    headers = ("", "connector", "system", "detail", *(("actions",) if verbose else ()))
    rows = [(_mark(s), s.name, s.system, s.detail, *((", ".join(s.actions),) if verbose else ())) for s in listed]
    table(headers, rows, styles=(MARK_STYLES,))


def _store() -> Store:
    from sqlalchemy.exc import SQLAlchemyError

    from aisoar.config import get_settings
    from aisoar.store import Store

    try:
        return Store(get_settings().store_url)
    except (ImportError, OSError) as exc:  # no driver for the database; a directory it cannot make
        raise Failure(f"cannot open the aisoar store: {exc}; check AISOAR_DATABASE_URL, AISOAR_DATA_DIR") from exc
    except SQLAlchemyError as exc:  # the driver's error, never the URL (it may hold a password)
        detail = getattr(exc, "orig", None) or type(exc).__name__
        raise Failure(f"cannot open the aisoar store ({detail}); check AISOAR_DATABASE_URL") from exc


@app.command("incidents")
def cmd_incidents(limit: Annotated[int, typer.Option(min=1, help="how many, newest first")] = 20) -> int:
    """List recent incidents."""
    found = _store().list_incidents(limit=limit)
    if not is_terminal():
        for incident in found:
            say(f"{incident.id}  {incident.status.value:13} {incident.severity.value:8} {incident.title[:80]!r}")
    elif found:
        rows = [(i.id, i.status.value, i.severity.value, textwrap.shorten(i.title, 160)) for i in found]
        table(("incident", "status", "severity", "title"), rows, styles=({}, STATUS_STYLES, SEVERITY_STYLES))
    else:
        say("no incidents yet (`aisoar fire` sends an alert)", style="dim")
    return 0


app.command("report")(evidence.report)
app.command("verify")(evidence.verify)
app.command("export")(evidence.export)
app.command("hold")(evidence.hold)
app.command("prune")(evidence.prune)
app.command("clock")(evidence.clock)
app.command("metrics")(evidence.metrics)
app.command("ack")(evidence.ack)


@app.command("sandbox")
def cmd_sandbox() -> int:
    """Show what the sandbox stand-ins received (Slack messages, Jira issues)."""
    from aisoar.config import get_settings
    from connectors.jira import SYSTEM as JIRA
    from connectors.slack import SYSTEM as SLACK

    settings = get_settings()
    if not settings.sandbox:
        raise Failure("no sandbox is running (start one with `make up`)")
    slack, jira = SLACK.settings_of(settings), JIRA.settings_of(settings)
    if slack.token:
        base = slack.base_url.rstrip("/").removesuffix("/api")
        replies = _sandbox_json(f"{base}/_sandbox/replies")
        for message in _sandbox_json(f"{base}/_sandbox/messages"):
            say(f"slack #{slack.channel} ts={message['ts']}: {message['text']}")
            for reply in (r for r in replies if r.get("thread_ts") == message["ts"]):
                say(f"  └ {' '.join(str(reply['text']).replace(chr(0x200B), '').split())[:160]}")
    if jira.url:
        for issue in _sandbox_json(f"{jira.url.rstrip('/')}/_sandbox/issues"):
            say(f"jira {issue['key']}: {issue['fields']['summary']}")
    return 0


@app.command("sandbox-click")
def cmd_sandbox_click(
    person: Annotated[str, typer.Argument(help="who clicks: a sandbox Slack user (alice, bob, mallory, ...)")],
    step: Annotated[str, typer.Argument(help="the step whose approval request to click, e.g. delete-key-at-provider")],
    reject: Annotated[bool, typer.Option("--reject", help="click Reject instead of Approve")] = False,
) -> int:
    """Click Approve (or --reject) on an approval request in the sandbox's Slack, as PERSON: the
    stand-in signs the click as Slack does and posts it to aisoar's /slack/interactivity."""
    import httpx

    from aisoar.config import get_settings
    from connectors.slack import SYSTEM as SLACK

    settings = get_settings()
    slack = SLACK.settings_of(settings)
    if not settings.sandbox or not slack.token:
        raise Failure("the sandbox's Slack is not running (start it with `make up`)")
    base = slack.base_url.rstrip("/").removesuffix("/api")
    user = next((u for u in _sandbox_json(f"{base}/_sandbox/users") if person in (u["name"], u["id"])), None)
    if user is None:
        raise Failure(f"no sandbox Slack user '{person}'")
    requests = [
        r
        for r in _sandbox_json(f"{base}/_sandbox/replies")
        if any(str(b.get("block_id", "")).startswith("approval-request:") for b in r.get("blocks", []))
        and f"`{step}`" in json.dumps(r.get("blocks"))
    ]
    if not requests:
        raise Failure(f"no approval request for step '{step}' in the sandbox's Slack (`aisoar approvals` lists them)")
    message = requests[-1]
    click = {
        "user": user["id"],
        "channel": message["channel"],
        "message_ts": message["ts"],
        "action_id": "aisoar_reject" if reject else "aisoar_approve",
    }
    before = len(_sandbox_json(f"{base}/_sandbox/ephemeral?user={user['id']}"))
    answer = httpx.post(f"{base}/_sandbox/click", json=click, timeout=15)
    if answer.status_code != 200:
        raise Failure(f"Slack could not click: {answer.json().get('detail', answer.text)[:300]}")
    delivered = answer.json()
    if delivered.get("status") != 200:
        raise Failure(f"aisoar answered the click with {delivered.get('status')}: {str(delivered.get('body'))[:300]}")
    time.sleep(1.0)  # a refusal is told privately just after Slack's 200
    private = [e["text"] for e in _sandbox_json(f"{base}/_sandbox/ephemeral?user={user['id']}")][before:]
    if private:
        say(f"{user['name']} clicked {'Reject' if reject else 'Approve'}; Slack showed them: {private[-1]}")
        return 3
    say(f"{user['name']} clicked {'Reject' if reject else 'Approve'} on the request for {step}: accepted.")
    return 0


def _sandbox_json(url: str) -> Any:
    import httpx

    try:
        return httpx.get(url, timeout=5).raise_for_status().json()
    except (httpx.HTTPError, ValueError) as exc:
        raise Failure(f"could not read {url} ({type(exc).__name__}); is `make up` running?") from exc


def _location(name: str) -> Path | None:
    """Where the top-level module ``name`` is imported from (a package's directory), without
    importing it; None when it is not found."""
    spec = find_spec(name)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return Path(spec.origin).resolve() if spec.origin else None


def _shadowed() -> str | None:
    """The line to print when one of this project's top-level packages comes from elsewhere
    (another installed distribution of the same name, found first); None when none does."""
    aisoar = _location("aisoar")
    if aisoar is None:
        return "the package 'aisoar' is not importable; install this project (pip install -e .)"
    for name in PROJECT_PACKAGES:
        location = _location(name)
        if location is None:
            return f"the module '{name}' is not importable; reinstall this project (pip install -e .)"
        if location.parent != aisoar.parent:
            return (
                f"the module '{name}' comes from {location}, not from this project ({aisoar.parent}): "
                "another distribution or a PYTHONPATH entry of that name shadows it"
            )
    return None


def _run(argv: list[str] | None) -> int:
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="aisoar", standalone_mode=False)
    except Failure as exc:
        complain(str(exc))
        return exc.code
    except typer.TyperException as exc:  # a usage error: an unknown option, a missing argument
        message = exc.format_message()
        context = getattr(exc, "ctx", None)
        if message:  # empty when Typer has printed the help instead (`aisoar` alone)
            complain(message + (f" (see `{context.command_path} --help`)" if context is not None else ""))
        return exc.exit_code
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> int:
    """The `aisoar` command; returns its exit code."""
    shadowed = _shadowed()
    if shadowed is not None:
        complain(shadowed)
        return 2
    try:
        code = _run(argv)
        sys.stdout.flush()
    except (PipeClosed, BrokenPipeError):  # the reader went away (`aisoar report X | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 128 + signal.SIGPIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
