"""Start and stop a local Prefect server (SQLite, with its UI) as a child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

QUIET_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def server_env(home: Path, api_url: str) -> dict[str, str]:
    return {
        **os.environ,
        **QUIET_ENV,
        "PREFECT_HOME": str(home),
        "PREFECT_UI_ENABLED": "true",
        "PREFECT_UI_API_URL": api_url,  # the browser UI calls the API here (default: port 4200)
    }


def is_healthy(api_url: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class PrefectServer:
    def __init__(self, home: Path, host: str = "127.0.0.1", port: int = 4200, log_file: Path | None = None) -> None:
        self.home = home
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

    def start(self, timeout: float = 90.0) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        if is_healthy(self.api_url):
            raise RuntimeError(f"something already answers on {self.url}; stop it or choose another port")
        log = open(self.log_file, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", self.host, "--port", str(self.port)],
            env=server_env(self.home, self.api_url),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not is_healthy(self.api_url):
            if self.process.poll() is not None:
                raise RuntimeError(f"the Prefect server exited with {self.process.returncode}; see {self.log_file}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the Prefect server did not answer within {timeout}s; see {self.log_file}")
            time.sleep(0.2)
        return self

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
