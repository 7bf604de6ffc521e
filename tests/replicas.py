"""Several `aisoar serve` replicas, each its own process, sharing one PostgreSQL store, one
Prefect server on PostgreSQL and one evidence directory: the production shape that
deployments/README.md describes, on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cli.prefect_server import PrefectServer
from sandbox.serving import free_port
from tests.conftest import API_TOKEN, SANDBOX_APPROVERS, WEBHOOK_SECRET
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
    log: Path
    process: subprocess.Popen[bytes] | None = None

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


@dataclass
class Cluster:
    """A Prefect server on PostgreSQL and the replicas' shared settings."""

    workdir: Path
    prefect: PrefectServer
    store_url: str
    env: dict[str, str]
    replicas: list[Replica] = field(default_factory=list)

    @classmethod
    def create(cls, postgres: Postgres, workdir: Path, auth_string: str, systems: dict[str, str]) -> Cluster:
        prefect = PrefectServer(
            workdir / "prefect",
            auth_string=auth_string,
            port=free_port(),
            database_url=fresh_database(postgres, "asyncpg"),
        ).start()
        sources = workdir / "sources"
        sources.mkdir(parents=True, exist_ok=True)
        (sources / "generic.yaml").write_text(GENERIC_SOURCE)
        store_url = fresh_database(postgres)
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
            "AISOAR_DATABASE_URL": store_url,
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
        started = [self._spawn(f"replica-{len(self.replicas) + i + 1}") for i in range(count)]
        deadline = time.monotonic() + timeout
        for replica in started:
            while not _healthy(replica):
                assert replica.process is not None
                if replica.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{replica.name} did not start:\n{replica.log.read_text()[-3000:]}")
                time.sleep(0.2)
        self.replicas += started
        return started

    def _spawn(self, name: str) -> Replica:
        port = free_port()
        home = self.workdir / name
        home.mkdir(parents=True, exist_ok=True)
        replica = Replica(name, port, home / "serve.log")
        env = {
            **self.env,
            "PREFECT_HOME": str(home / "prefect-client"),
            "AISOAR_INGRESS_PORT": str(port),
            "AISOAR_REPLICA_ID": name,
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
