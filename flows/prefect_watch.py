"""Is Prefect there, and is it straining? What the runtime and ``/healthz`` say about it.

* ``PrefectWatch`` asks Prefect's ``/health`` every second (one short request, no retries):
  while it does not answer, new runs are not attempted (alerts wait, ``pending``, in the
  inbox) and ``/healthz`` says why; the first answer after an outage lets them start.
* Prefect's retries are counted and logged by aisoar/prefect_retries.py.
"""

from __future__ import annotations

import logging
import threading
import time

import httpx
from prefect.settings import PREFECT_API_URL

from flows.quick_create import _headers

log = logging.getLogger("aisoar.prefect")


class PrefectWatch:
    def __init__(self, every: float = 1.0, timeout: float = 5.0, failures_before_down: int = 3) -> None:
        self.every = every
        self.timeout = timeout
        self.failures_before_down = failures_before_down
        self._failures = 0
        self._first_failure = 0.0
        self.problem: str | None = None  # why Prefect cannot take runs now, or None
        self.down_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(
            base_url=str(PREFECT_API_URL.value()).rstrip("/"), headers=_headers(), timeout=timeout
        )

    def start(self) -> PrefectWatch:
        self.check()
        self._thread = threading.Thread(target=self._loop, name="aisoar-prefect-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._http.close()

    def _loop(self) -> None:
        # While Prefect is down, looked at four times as often: its return starts what waited.
        while not self._stop.wait(self.every if self.problem is None else self.every / 4):
            self.check()

    def check(self) -> str | None:
        """One look. Prefect counts as down when it refuses connections, or when it has not
        answered for ``failures_before_down`` looks in a row: a server busy with a burst answers
        slowly, and treating it as down would hold back the very runs the burst needs."""
        try:
            response = self._http.get("/health")
            failure = None if response.status_code == 200 else f"Prefect's API answers {response.status_code}"
            refused = False
        except httpx.HTTPError as exc:
            failure = f"Prefect's API is unreachable ({type(exc).__name__})"
            refused = isinstance(exc, httpx.ConnectError)
        self._failures = self._failures + 1 if failure else 0
        if self._failures == 1:
            self._first_failure = time.monotonic()
        problem = failure if failure and (refused or self._failures >= self.failures_before_down) else None
        if failure and not problem:
            return self.problem
        if problem and self.problem is None:
            self.down_since = self._first_failure
            log.warning("%s: new runs wait, their alerts stay pending in the inbox", problem)
        elif problem is None and self.problem is not None:
            down = time.monotonic() - (self.down_since or time.monotonic())
            log.warning("Prefect answers again after %.0f s: the alerts that waited are dispatched now", down)
            self.down_since = None
        self.problem = problem
        return problem
