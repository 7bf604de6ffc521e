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
    def __init__(self, every: float = 1.0, timeout: float = 2.0) -> None:
        self.every = every
        self.timeout = timeout
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
        while not self._stop.wait(self.every):
            self.check()

    def check(self) -> str | None:
        try:
            response = self._http.get("/health")
            problem = None if response.status_code == 200 else f"Prefect's API answers {response.status_code}"
        except httpx.HTTPError as exc:
            problem = f"Prefect's API is unreachable ({type(exc).__name__})"
        if problem and self.problem is None:
            self.down_since = time.monotonic()
            log.warning("%s: new runs wait, their alerts stay pending in the inbox", problem)
        elif problem is None and self.problem is not None:
            down = time.monotonic() - (self.down_since or time.monotonic())
            log.warning("Prefect answers again after %.0f s: starting the runs that waited", down)
            self.down_since = None
        self.problem = problem
        return problem
