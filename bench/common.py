"""What the benches share: a locked Prefect server and this process's client pointed at it, the
sandbox fakes, aisoar's stack (ingress, dispatcher, playbook runtime) in this process, the plain
Prefect baseline served with ``flow.serve()``, leaked-key alerts seeded in the sandbox, when a
request reached a fake, figures and memory.

Call ``prefect_environment`` before anything imports Prefect (``flows.*``, ``prefect.*``): the
stack's modules are imported when it starts, never at the import of this module.
"""

from __future__ import annotations

import inspect
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

try:
    import psutil  # type: ignore[import-untyped, unused-ignore]
except ImportError:  # /proc then
    psutil = None

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aisoar.config import PROJECT_ROOT, Settings  # noqa: E402
from aisoar.ingress.auth import signed_headers  # noqa: E402
from cli.prefect_auth import basic_auth, credential  # noqa: E402
from cli.prefect_server import PrefectServer  # noqa: E402
from sandbox.serving import BackgroundServer, free_port  # noqa: E402
from sandbox.stack import DEMO_PROJECT, SANDBOX_PEOPLE, Sandbox  # noqa: E402

if TYPE_CHECKING:
    from aisoar.ingress.dispatch import Dispatcher
    from flows.runtime import PlaybookRuntime
    from flows.services import Services

SECRET = "bench-webhook-secret"
APPROVERS = PROJECT_ROOT / "sandbox" / "approvers.yaml"  # alice: incident-commander
LEAKED_KEY_ALERT = PROJECT_ROOT / "examples" / "alerts" / "leaked-openai-key.json"
LEAKED_KEY_PLAYBOOK = "leaked-llm-api-key"
PLAIN_FLOW = HERE / "plain_prefect_flow.py"
PLAIN_DEPLOYMENT = "block-key/plain-block"
FAILED_STATES = ("FAILED", "CRASHED")


# -- Prefect ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrefectClientEnv:
    """Where this process's Prefect client points, and the credential it sends."""

    port: int
    auth_string: str

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def headers(self) -> dict[str, str]:
        """For raw API calls (what the UI sends)."""
        return basic_auth(self.auth_string)


def prefect_environment(work: Path, port: int, logging_level: str = "WARNING") -> PrefectClientEnv:
    """Point this process's Prefect client (and the processes it starts) at a bench server on
    ``port``, locked as `aisoar up` locks its own. Before anything imports Prefect: Prefect reads
    its API URL once."""
    auth = credential(work).auth_string
    os.environ.pop("PREFECT_API_KEY", None)
    os.environ.update(
        {
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_HOME": str(work / "prefect-client"),
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_API_AUTH_STRING": auth,
            "PREFECT_LOGGING_LEVEL": logging_level,
        }
    )
    return PrefectClientEnv(port, auth)


def start_prefect(home: Path, client: PrefectClientEnv, database_url: str | None = None) -> PrefectServer:
    """A Prefect server as `aisoar up` starts one (SQLite with a one-connection pool), or on
    ``database_url`` (PostgreSQL), locked with the client's credential, on the client's port."""
    extra: dict[str, Any] = {} if database_url is None else {"database_url": database_url}
    server = PrefectServer(home, auth_string=client.auth_string, port=client.port, **extra)
    return server.start()


def flow_runs(client: PrefectClientEnv, deployment_ids: Iterable[str]) -> list[dict[str, Any]]:
    """Every flow run of the deployments, read from Prefect's API (200 a page)."""
    found: list[dict[str, Any]] = []
    ids = sorted(deployment_ids)
    while True:
        page = httpx.post(
            f"{client.api_url}/flow_runs/filter",
            headers=client.headers,
            json={"flow_runs": {"deployment_id": {"any_": ids}}, "limit": 200, "offset": len(found)},
            timeout=60,
        )
        page.raise_for_status()
        batch = page.json()
        found.extend(batch)
        if len(batch) < 200:
            return found


def state_counts(runs: list[dict[str, Any]]) -> dict[str, int]:
    """Runs by state type (PAUSED, COMPLETED, FAILED, ...)."""
    counts: dict[str, int] = {}
    for run in runs:
        kind = str((run.get("state") or {}).get("type") or "NONE")
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


class ServedPlainFlow:
    """The plain Prefect way: bench/plain_prefect_flow.py served with ``flow.serve()`` and its
    default settings, in a process (and process group) of its own."""

    def __init__(self, client: PrefectClientEnv, sandbox_env: dict[str, str], log: Path) -> None:
        self.client = client
        self.sandbox_env = sandbox_env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.deployment_id = ""

    def start(self, timeout: float = 60) -> ServedPlainFlow:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(PLAIN_FLOW)],
                env={**os.environ, **self.sandbox_env},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,  # the runs' processes are stopped with it
            )
        deadline = time.monotonic() + timeout
        while True:
            found = httpx.post(
                f"{self.client.api_url}/deployments/filter",
                json={"deployments": {"name": {"any_": [PLAIN_DEPLOYMENT.split("/")[1]]}}},
                headers=self.client.headers,
                timeout=10,
            ).json()
            if found:
                self.deployment_id = str(found[0]["id"])
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"the served flow exited with {self.process.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the served deployment did not appear within {timeout}s; see {self.log}")
            time.sleep(0.2)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


# -- the sandbox and aisoar ------------------------------------------------------------------


def start_sandbox() -> tuple[Sandbox, dict[str, str]]:
    """Every sandbox fake on loopback, with the Slack workspace's people (the approvers get their
    codes by DM); returns the sandbox and the AISOAR_* settings that point at it."""
    sandbox = Sandbox.create()
    for person in SANDBOX_PEOPLE:
        sandbox.slack.add_user(**person._asdict())
    return sandbox, sandbox.start()


@dataclass(frozen=True)
class LeakedKey:
    """A key seeded at the sandbox gateway (LiteLLM) and provider (OpenAI)."""

    secret: str
    key_id: str
    gateway_hash: str  # what the block request names


def seed_leaked_key(sandbox: Sandbox, tag: str) -> LeakedKey:
    secret = f"sk-proj-BENCH{tag}" + secrets.token_hex(20)
    key_id = f"key_bench_{tag}"
    gateway_hash = sandbox.litellm.add_key(secret, alias=f"bench-{tag}", spend=10.0)
    sandbox.openai.add_key(DEMO_PROJECT, secret, key_id=key_id)
    return LeakedKey(secret, key_id, gateway_hash)


def leaked_key_alert(key: LeakedKey, alert_id: str) -> dict[str, Any]:
    """examples/alerts/leaked-openai-key.json, reporting ``key`` under the source's id ``alert_id``."""
    alert: dict[str, Any] = json.loads(LEAKED_KEY_ALERT.read_text())
    alert["id"] = alert_id
    entity = alert["entities"][0]
    entity.update({"project_id": DEMO_PROJECT, "key_id": key.key_id, "secret": key.secret})
    return alert


def signed_delivery(alert: dict[str, Any], secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a signed POST /webhooks/generic."""
    body = json.dumps(alert).encode()
    return body, signed_headers(secret, body)


def runtime_settings(settings: Settings) -> dict[str, Any]:
    """The settings that bound the runtime's and dispatcher's concurrency, as they are."""
    words = ("runner_", "dispatch", "concurren", "worker", "parallel", "processes")
    return {
        name: getattr(settings, name)
        for name in sorted(type(settings).model_fields)
        if any(word in name for word in words) and name != "step_retry_delays"
    }


class AisoarStack:
    """aisoar as `aisoar serve` runs it, in this process: the services, the playbook runtime,
    the dispatcher and the ingress app served on a loopback port."""

    def __init__(self, work: Path, sandbox_env: dict[str, str], **overrides: Any) -> None:
        values: dict[str, Any] = {k.removeprefix("AISOAR_").lower(): v for k, v in sandbox_env.items()}
        values |= {
            "data_dir": work / "data",
            "webhook_secrets": {"generic": SECRET},
            "api_token": SECRET,
            "approvers_file": APPROVERS,
        }
        values |= overrides
        self.settings = Settings.model_validate(values)
        self.svc: Services | None = None
        self.runtime: PlaybookRuntime | None = None
        self.dispatcher: Dispatcher | None = None
        self.server: BackgroundServer | None = None

    def start(self) -> AisoarStack:
        from aisoar.ingress.app import create_app
        from aisoar.ingress.dispatch import Dispatcher
        from flows.runtime import PlaybookRuntime
        from flows.services import build_services

        self.svc = build_services(self.settings)
        self.runtime = PlaybookRuntime(self.svc)
        self.runtime.start()
        # Wired as `aisoar serve` wires it (cli/main.py); the keyword arguments a version of the
        # code does not take yet are left out, so the bench also runs on the commit before.
        self.dispatcher = Dispatcher(
            self.svc.store,
            list(self.svc.specs.values()),
            self.runtime,
            timedelta(seconds=self.settings.dedup_window_seconds),
            **_taken(
                Dispatcher,
                owner=getattr(self.runtime, "owner", None),
                lease=getattr(self.runtime, "stale_after", None),
            ),
        )
        app = create_app(
            self.settings,
            self.svc.store,
            self.dispatcher,
            desk=self.runtime.desk,
            **_taken(
                create_app, evidence=self.svc.evidence, prefect_problem=getattr(self.runtime, "prefect_problem", None)
            ),
        )
        self.server = BackgroundServer(app).start()
        return self

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("the stack is not started")
        return self.server.url

    @property
    def services(self) -> Services:
        if self.svc is None:
            raise RuntimeError("the stack is not started")
        return self.svc

    @property
    def store(self) -> Any:
        return self.services.store

    def deployment_id(self, playbook: str) -> str:
        if self.runtime is None:
            raise RuntimeError("the stack is not started")
        return str(self.runtime.deployments[playbook])

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.runtime is not None:
            self.runtime.stop()
            self.runtime = None


class ServedAisoar:
    """aisoar as production runs it: `aisoar serve` in a process of its own, against the bench's
    Prefect server (PREFECT_API_URL of this process), the sandbox's stand-ins staying in this
    one (as the real systems would be elsewhere). The same face as ``AisoarStack`` for the bench:
    ``settings``, ``url``, ``deployment_id``, ``store`` (read from this process), ``stop``."""

    def __init__(self, work: Path, sandbox_env: dict[str, str], **overrides: Any) -> None:
        self.work = work
        self.stack = AisoarStack(work, sandbox_env, **overrides)  # the same settings, resolved
        self.settings = self.stack.settings
        self.env = {
            **os.environ,
            **sandbox_env,
            "PREFECT_HOME": str(work / "serve-prefect-client"),
            "AISOAR_DATA_DIR": str(self.settings.data_dir),
            "AISOAR_WEBHOOK_SECRETS__generic": SECRET,
            "AISOAR_API_TOKEN": SECRET,
            "AISOAR_APPROVERS_FILE": str(APPROVERS),
            "AISOAR_INGRESS_PORT": str(free_port()),
            "AISOAR_REPLICA_ID": "bench-serve",
            **{f"AISOAR_{key.upper()}": str(value) for key, value in overrides.items()},
        }
        self.log = work / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._store: Any = None

    def start(self, timeout: float = 120) -> ServedAisoar:
        self.work.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "aisoar"), "serve"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.work,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).json().get("status") == "ok":
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"aisoar serve did not start; see {self.log}")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['AISOAR_INGRESS_PORT']}"

    @property
    def store(self) -> Any:
        if self._store is None:
            from aisoar.store import Store

            self._store = Store(self.settings.store_url)
        return self._store

    def deployment_id(self, playbook: str) -> str:
        found = httpx.post(
            f"{os.environ['PREFECT_API_URL']}/deployments/filter",
            json={"deployments": {"name": {"any_": [playbook]}}},
            headers=basic_auth(os.environ["PREFECT_API_AUTH_STRING"]),
            timeout=30,
        ).json()
        return str(found[0]["id"])

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self._store is not None:
            self._store.engine.dispose()
            self._store = None


def _taken(func: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    """The keyword arguments ``func`` takes, of those given (and not None)."""
    parameters = inspect.signature(func).parameters
    return {name: value for name, value in kwargs.items() if name in parameters and value is not None}


# -- measuring ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.002)


def arrival(requests: list[dict[str, Any]], path: str, marker: str) -> float | None:
    """When the first request to ``path`` naming ``marker`` reached a fake (its ``t``)."""
    for request in list(requests):
        if request["path"] == path and marker in json.dumps(request.get("body")) + str(request["path"]):
            return float(request["t"])
    return None


def arrivals(requests: list[dict[str, Any]], path: str, markers: Iterable[str]) -> dict[str, float]:
    """``arrival`` for many markers in one pass: marker -> when the first request naming it came."""
    wanted = set(markers)
    found: dict[str, float] = {}
    for request in list(requests):
        if request["path"] != path or not wanted:
            continue
        text = json.dumps(request.get("body")) + str(request["path"])
        for marker in [m for m in wanted if m in text]:
            found[marker] = float(request["t"])
            wanted.discard(marker)
    return found


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def process_tree(root: int, exclude: Iterable[int] = ()) -> list[int]:
    """``root`` and its descendants, without the subtrees of ``exclude``."""
    skip = set(exclude)
    tree = _children()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in skip:
            continue
        found.append(pid)
        todo.extend(tree.get(pid, []))
    return found


def rss_bytes(pids: Iterable[int]) -> int:
    """The resident memory of the processes (psutil when installed, else /proc)."""
    total = 0
    for pid in pids:
        try:
            if psutil is not None:
                total += int(psutil.Process(pid).memory_info().rss)
                continue
            for row in Path(f"/proc/{pid}/status").read_text().splitlines():
                if row.startswith("VmRSS:"):
                    total += int(row.split()[1]) * 1024
        except (OSError, ValueError):
            continue
        except Exception as exc:  # psutil.NoSuchProcess: it ended meanwhile
            if type(exc).__name__ not in ("NoSuchProcess", "ZombieProcess", "AccessDenied"):
                raise
    return total


def machine() -> str:
    import platform

    import prefect

    return (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, Prefect {prefect.__version__}, "
        "everything on loopback"
    )
