"""Start a real server as a child process for the test session: wait until it answers,
fail (never skip) with the tail of its log when it cannot start, stop it at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def venv_binary(name: str, install_hint: str) -> str:
    """An executable installed in this interpreter's environment (or on PATH); fails the test
    session with what to install when it is missing."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        reason = f"`{name}` is not installed next to {sys.executable} or on PATH: {install_hint}"
        print(reason, file=sys.stderr)
        pytest.fail(reason, pytrace=False)
    return found


def log_tail(log: Path, size: int = 2000, redact: tuple[str, ...] = ()) -> str:
    """The end of a server's log, with the given secrets (a dev root token ...) masked."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    for secret in redact:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text[-size:]


@contextmanager
def server_process(
    name: str,
    argv: list[str],
    ready_url: str,
    workdir: Path,
    *,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 30.0,
    ready: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
    redact: tuple[str, ...] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until the context ends; ``env`` adds variables to ours (None removes one);
    ``redact``: secrets the server prints (kept out of the failure message)."""
    log = workdir / f"{name.lower().replace(' ', '-')}.log"
    environment = {**os.environ, "DO_NOT_TRACK": "1"}
    for key, value in (env or {}).items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=workdir,
            start_new_session=True,  # its own process group: stopped with everything it started
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                tail = log_tail(log, redact=redact)
                pytest.fail(f"{name} exited during start-up (code {process.returncode}):\n{tail}")
            try:
                if ready(httpx.get(ready_url, timeout=1)):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not answer {ready_url} within {timeout}s:\n{log_tail(log, redact=redact)}")
            time.sleep(0.1)
        yield process
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, 15)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass
