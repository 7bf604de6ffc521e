"""A small httpx wrapper: timeouts, bounded retries on 429/5xx/connection errors with
exponential backoff and jitter, Retry-After honoured, errors that never carry secrets, and
plan mode (a change is described, not sent)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from connectors.errors import ConnectorError, Planned
from connectors.retry import RETRY_STATUSES, Backoff, Failure, with_retries

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
NOT_ACTED_ON_STATUSES = frozenset({429, 503})  # the server refused the request before acting on it
PROOF_SECONDS = 60.0  # how long a successful identity check vouches for this system's 404s


class _Answer(Exception):
    """An answer whose status the caller did not expect."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class HttpApi:
    def __init__(
        self,
        system: str,
        base_url: str,
        headers: dict[str, str],
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: float = 0.2,
        max_backoff: float = 8.0,
        plan: bool = False,
    ) -> None:
        self.system = system
        self.attempts = attempts
        self.policy = Backoff(attempts, backoff, max_backoff)
        self.plan = plan
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        # An authenticated read that only the right system answers (the connector's check).
        # A 404 means "no such asset" only after it succeeded: a wrong base URL, a proxy or
        # another service also answers 404.
        self.identify: Callable[[], object] | None = None
        self._proven_at: float | None = None
        self._proof_lock = threading.RLock()
        self._proving = False

    def prove_identity(self, operation: str, asset: str) -> None:
        """Raise ``ConnectorError`` unless the identity check passed within ``PROOF_SECONDS``."""
        if self.identify is None:
            return
        with self._proof_lock:
            if self._proving or (self._proven_at is not None and time.monotonic() - self._proven_at < PROOF_SECONDS):
                return  # proven recently, or this 404 is part of the check itself
            self._proving = True
            try:
                self.identify()
            except ConnectorError as exc:
                raise ConnectorError(
                    self.system,
                    operation,
                    asset,
                    404,
                    f"the answer was 404, but the endpoint did not prove it is {self.system} "
                    f"(check the base URL and the credential): {exc}",
                ) from exc
            finally:
                self._proving = False
            self._proven_at = time.monotonic()

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        operation: str,
        asset: str,
        *,
        ok: tuple[int, ...] = (200,),
        json: Any = None,
        params: dict[str, str] | None = None,
        changes: bool | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        """Send one request, retrying what is worth retrying; return the response if its
        status is in ``ok``, else raise ``ConnectorError``.

        ``changes`` says whether the request changes the target (default: any method but
        GET/HEAD/OPTIONS); in plan mode such a request is not sent and ``Planned`` is raised.

        ``idempotent=False`` (a request that must not happen twice): it is tried again only
        when the target certainly did not act on it (a refused connection, 429, 503); after
        a timeout, a dropped connection or another 5xx it may have acted, so it is not.
        """
        if changes is None:
            changes = method.upper() not in READ_METHODS
        if changes and self.plan:
            raise Planned(self.system, operation, asset, f"{method.upper()} {path}")
        def send() -> httpx.Response:
            response = self._client.request(method, path, json=json, params=params)
            if response.status_code not in ok:
                raise _Answer(response)
            return response

        def classify(exc: Exception) -> Failure | None:
            if isinstance(exc, httpx.TimeoutException):
                detail = f"no answer within {self._client.timeout.read}s"
                return Failure("timeout", detail, again=idempotent or isinstance(exc, httpx.ConnectTimeout))
            if isinstance(exc, httpx.TransportError):
                refused = isinstance(exc, httpx.ConnectError)
                return Failure("connection error", type(exc).__name__, again=idempotent or refused)
            if isinstance(exc, _Answer):
                status = exc.response.status_code
                again = status in (RETRY_STATUSES if idempotent else NOT_ACTED_ON_STATUSES)
                return Failure(status, _detail(exc.response), again, exc.response.headers.get("retry-after"))
            return None

        response = with_retries(self.policy, self.system, operation, asset, send, classify)
        if response.status_code == 404:
            self.prove_identity(operation, asset)
        return response


def _detail(response: httpx.Response) -> str:
    """A short, secret-free description of an error answer."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        for key in ("error", "detail", "message", "errorMessages"):
            if key in body:
                text = str(body[key])
                if isinstance(body.get("errors"), list) and body["errors"]:  # PagerDuty, Jira
                    text += ": " + "; ".join(str(e) for e in body["errors"])
                return text[:300]
        if isinstance(body.get("errors"), list) and body["errors"]:  # Vault / OpenBao
            return "; ".join(" ".join(str(e).split()) for e in body["errors"])[:300]
    return str(body)[:300]
