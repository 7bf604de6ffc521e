"""Start and stop a local Prefect server (SQLite, with its UI) as a child process, locked with
Prefect's own basic authentication (cli/prefect_auth.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from cli.prefect_auth import basic_auth

QUIET_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def server_env(home: Path, api_url: str, auth_string: str | None) -> dict[str, str]:
    """The server's environment. With ``auth_string`` ("user:password") every API request must
    carry it as basic auth (the server's own calls to itself too); None: an open server."""
    env = {
        **os.environ,
        **QUIET_ENV,
        "PREFECT_HOME": str(home),
        "PREFECT_UI_ENABLED": "true",
        "PREFECT_UI_API_URL": api_url,  # the browser UI calls the API here (default: port 4200)
        "PREFECT_API_URL": api_url,  # the server's own client, never another server's
    }
    for key in ("PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING"):
        env.pop(key, None)
        if auth_string is not None:
            env[key] = auth_string
    # The classic UI at the root: every link aisoar prints or sends (run pages, the report, the
    # approval form) is a classic UI page, so a responder never lands in the other one.
    env.setdefault("PREFECT_SERVER_UI_V2_ENABLED", "false")
    env.setdefault("PREFECT_SERVER_DATABASE_CONNECTION_URL", sqlite_url(home))
    return env


def sqlite_url(home: Path) -> str:
    """Prefect's own SQLite file, with its server's transactions taken one at a time.

    Prefect starts most write transactions on SQLite as deferred reads (its resume endpoint
    among them): when two collide, SQLite refuses the second at once, "database is locked", and
    the UI's resume fails with a 503 it never retries (62 of 100 concurrent answers measured).
    Prefect gives a database whose URL mentions ``:memory:`` a pool of exactly one connection
    (prefect/server/database/configurations.py); SQLAlchemy ignores the unknown ``_pool`` query
    argument, so this is the same file on disk with every transaction queued in the pool
    instead of refused. bench/approvals.py measures it (100 concurrent answers, 0 refused), and
    tests/test_prefect_auth.py fails if a Prefect upgrade stops honouring it.
    """
    return f"sqlite+aiosqlite:///{home / 'prefect.db'}?_pool=:memory:"


def is_healthy(api_url: str, timeout: float = 1.0, auth_string: str | None = None) -> bool:
    headers = basic_auth(auth_string) if auth_string else None
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", headers=headers, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class PrefectServer:
    """A Prefect server in its own process group. ``auth_string`` is its credential
    (cli/prefect_auth.py's ``credential``); None, said explicitly, starts it open to anyone who
    can reach the port. ``database_url``: its database (``postgresql+asyncpg://...``); None, its
    own SQLite file in ``home`` (``sqlite_url``)."""

    def __init__(
        self,
        home: Path,
        *,
        auth_string: str | None,
        host: str = "127.0.0.1",
        port: int = 4200,
        log_file: Path | None = None,
        database_url: str | None = None,
    ) -> None:
        self.home = home
        self.database_url = database_url
        self.auth_string = auth_string
        self.host = host
        self.port = port
        self.log_file = log_file or home / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def headers(self) -> dict[str, str]:
        """What a request to the API carries: the basic-auth header, when the server is locked."""
        return basic_auth(self.auth_string) if self.auth_string else {}

    def start(self, timeout: float = 90.0) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        if is_healthy(self.api_url, auth_string=self.auth_string):
            raise RuntimeError(f"something already answers on {self.url}; stop it or choose another port")
        log = open(self.log_file, "ab")
        env = server_env(self.home, self.api_url, self.auth_string)
        if self.database_url is not None:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.database_url
            # Prefect's default pool (5, and 10 more) runs dry under a burst of several replicas'
            # runs: requests then wait 30 s and fail 500 (a run's suspend, say).
            env.setdefault("PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE", "20")
            env.setdefault("PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW", "40")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", self.host, "--port", str(self.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not is_healthy(self.api_url, auth_string=self.auth_string):
            if self.process.poll() is not None:
                raise RuntimeError(f"the Prefect server exited with {self.process.returncode}; see {self.log_file}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the Prefect server did not answer within {timeout}s; see {self.log_file}")
            time.sleep(0.2)
        if self.auth_string is not None:
            self._check_locked()
        return self

    def _check_locked(self) -> None:
        """The API refuses a request without the credential and takes one with it (/api/health
        answers either way, so it cannot tell); else the server is stopped."""
        url = f"{self.api_url}/admin/version"
        try:
            bare = httpx.get(url, timeout=10).status_code
            sent = httpx.get(url, headers=self.headers, timeout=10).status_code
        except httpx.HTTPError as exc:
            self.stop()
            raise RuntimeError(f"the Prefect server on {self.url} stopped answering ({type(exc).__name__})") from exc
        if (bare, sent) != (401, 200):
            self.stop()
            raise RuntimeError(
                f"the Prefect server on {self.url} is not locked with its credential: it answers {bare} without it "
                f"and {sent} with it; see {self.log_file}"
            )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
