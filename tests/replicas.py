"""Several `aisoar serve` replicas, each its own process, sharing one PostgreSQL store, one
Prefect server on PostgreSQL and one evidence directory: the production shape that
deployments/README.md describes, on loopback. Without PostgreSQL: one replica (or more, taking
turns) on the default SQLite store with a Prefect server of its own on SQLite, which a test can
stop and start again on the same port and data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from aisoar.ingress.auth import signed_headers
from cli.prefect_server import PrefectServer
from sandbox.serving import free_port
from sandbox.stack import DEMO_PROJECT, Sandbox
from tests.conftest import API_TOKEN, READ, SANDBOX_APPROVERS, WEBHOOK_SECRET
from tests.servers.postgres import Postgres, fresh_database

AISOAR = str(Path(sys.executable).parent / "aisoar")
# A source without the default rate limit: a burst from one detection source is the point here.
GENERIC_SOURCE = """name: generic
title: aisoar generic JSON
format: generic
auth: {scheme: aisoar-hmac}
rate_limit_per_minute: 1000000
"""


@dataclass
class Replica:
    name: str
    port: int
    log: Path = field(default_factory=Path)  # its home's serve.log, set when it is started
    process: subprocess.Popen[bytes] | None = None
    replica_id: str | None = None  # AISOAR_REPLICA_ID; None: its name

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """What a crash, an OOM kill or a lost machine does: no shutdown of any kind."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def post(self, alert: dict[str, Any], source: str = "generic") -> httpx.Response:
        """Deliver ``alert`` as the detection source signs it."""
        body = json.dumps(alert).encode()
        return httpx.post(
            f"{self.url}/webhooks/{source}", content=body, headers=signed_headers(WEBHOOK_SECRET, body), timeout=10
        )

    def health(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{self.url}/healthz", timeout=5).json()
        return answer

    def alert(self, alert_id: str) -> dict[str, Any]:
        """``GET /alerts/{id}``: its status, incident, runs and error."""
        answer: dict[str, Any] = httpx.get(f"{self.url}/alerts/{alert_id}", headers=READ, timeout=5).json()
        return answer


@dataclass
class Cluster:
    """A Prefect server and the replicas' shared settings: on PostgreSQL (a store and a Prefect
    database of their own), or, without ``postgres``, on the default SQLite store in the shared
    data directory and a Prefect server on its own SQLite file."""

    workdir: Path
    prefect: PrefectServer
    store_url: str
    env: dict[str, str]
    replicas: list[Replica] = field(default_factory=list)

    @classmethod
    def create(cls, postgres: Postgres | None, workdir: Path, auth_string: str, systems: dict[str, str]) -> Cluster:
        """``systems``: AISOAR_* settings the replicas get (the sandbox's, and any other setting)."""
        prefect = PrefectServer(
            workdir / "prefect",
            auth_string=auth_string,
            port=free_port(),
            database_url=fresh_database(postgres, "asyncpg") if postgres is not None else None,
        ).start()
        sources = workdir / "sources"
        sources.mkdir(parents=True, exist_ok=True)
        (sources / "generic.yaml").write_text(GENERIC_SOURCE)
        # Without PostgreSQL: AISOAR_DATABASE_URL unset, the default store (aisoar.db in the data dir).
        store_url = (
            fresh_database(postgres) if postgres is not None else f"sqlite:///{workdir / 'shared' / 'aisoar.db'}"
        )
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AISOAR_", "PREFECT_")) or key in ("PREFECT_SERVER_ANALYTICS_ENABLED",)
        }
        env |= {
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": prefect.api_url,
            "PREFECT_API_AUTH_STRING": auth_string,
            "PREFECT_LOGGING_LEVEL": "WARNING",
            **({"AISOAR_DATABASE_URL": store_url} if postgres is not None else {}),
            "AISOAR_DATA_DIR": str(workdir / "shared"),  # the evidence files: a shared volume
            "AISOAR_SOURCES_DIR": str(sources),
            "AISOAR_WEBHOOK_SECRETS__generic": WEBHOOK_SECRET,
            "AISOAR_API_TOKEN": API_TOKEN,
            "AISOAR_APPROVERS_FILE": str(SANDBOX_APPROVERS),
            "AISOAR_PREFECT_UI_URL": prefect.url,
            **systems,
        }
        return cls(workdir, prefect, store_url, env)

    def start(self, count: int, timeout: float = 90) -> list[Replica]:
        started = [self._spawn(Replica(f"replica-{len(self.replicas) + i + 1}", free_port())) for i in range(count)]
        self.replicas += started
        deadline = time.monotonic() + timeout
        for replica in started:
            _wait_healthy(replica, deadline)
        return started

    def restart(self, replica: Replica, timeout: float = 90) -> float:
        """Start ``replica`` again (after a kill or a stop): same name (its AISOAR_REPLICA_ID),
        same port, same home. Returns the monotonic time its /healthz first answered 200."""
        assert not replica.alive, f"{replica.name} is still running"
        self._spawn(replica)
        return _wait_healthy(replica, time.monotonic() + timeout, every=0.05)

    def start_twin(self, replica: Replica) -> Replica:
        """Start another process under ``replica``'s id (a misconfigured replica: a copied
        AISOAR_REPLICA_ID), on a port and in a home of its own; not waited for."""
        twin = Replica(f"{replica.name}-twin", free_port(), replica_id=replica.replica_id or replica.name)
        self.replicas.append(twin)
        return self._spawn(twin)

    def _spawn(self, replica: Replica) -> Replica:
        home = self.workdir / replica.name
        home.mkdir(parents=True, exist_ok=True)
        replica.log = home / "serve.log"
        port, name = replica.port, replica.name
        env = {
            **self.env,
            "PREFECT_HOME": str(home / "prefect-client"),
            "AISOAR_INGRESS_PORT": str(port),
            "AISOAR_REPLICA_ID": replica.replica_id or name,
        }
        with open(replica.log, "ab") as log:
            replica.process = subprocess.Popen(
                [AISOAR, "serve"], cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return replica

    def stop(self) -> None:
        for replica in self.replicas:
            if replica.alive:
                assert replica.process is not None
                replica.process.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            if replica.process is not None:
                try:
                    replica.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    replica.process.kill()
        self.prefect.stop()


def _healthy(replica: Replica) -> bool:
    try:
        return httpx.get(f"{replica.url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_healthy(replica: Replica, deadline: float, every: float = 0.2) -> float:
    """Wait until the replica's /healthz answers 200 (ok or degraded); when it did (monotonic)."""
    while not _healthy(replica):
        assert replica.process is not None
        if replica.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{replica.name} did not start:\n{replica.log.read_text()[-3000:]}")
        time.sleep(every)
    return time.monotonic()


T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float, every: float = 0.05) -> T:
    """``check()``'s first truthy answer; fails after ``timeout`` seconds with its last answer."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        try:
            last = check()
        except httpx.TransportError as exc:
            last = None
            error: BaseException | None = exc
        else:
            error = None
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r} {error or ''})")
        time.sleep(every)


def leaked_key_alert(sandbox: Sandbox, label: str, index: int) -> tuple[dict[str, Any], str]:
    """An alert for a key that exists at the gateway and the provider; (alert, gateway token hash)."""
    secret = f"sk-proj-{label.upper()}{index:05d}" + "x" * 32
    key_id = f"key_{label}_{index}"
    token = sandbox.litellm.add_key(secret, alias=f"{label}-{index}", spend=1.0)
    sandbox.openai.add_key(DEMO_PROJECT, secret, key_id=key_id)
    entity = {"type": "llm_api_key", "provider": "openai", "project_id": DEMO_PROJECT, "key_id": key_id}
    return {
        "id": f"{label}-{index}",
        "title": f"leaked key {label} {index}",
        "severity": "high",
        "incident_type": "api_abuse",
        "entities": [{**entity, "secret": secret}],
    }, token
