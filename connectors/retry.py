"""The retry policy every connector shares, on tenacity: bounded attempts, exponential backoff
with jitter, and a server's Retry-After honoured (capped, so a hostile answer cannot stall a
run).

A connector calls ``with_retries`` with the call and a ``classify`` that turns what the call
raised into a ``Failure``: its status and detail, whether another try is worth it, and whether
the step may be tried again later (``transient``: the target certainly did not act, or acting
twice is safe). The last failure becomes the ``ConnectorError`` the connector raises.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from connectors.errors import ConnectorError

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})  # 529: Anthropic "overloaded"

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    attempts: int = 4
    backoff: float = 0.2
    max_backoff: float = 8.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after:
            try:
                return max(0.0, min(float(retry_after), self.max_backoff * 4))
            except ValueError:
                pass
        base: float = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return base / 2 + random.uniform(0, base / 2)


@dataclass(frozen=True)
class Failure:
    """One failed try, as the connector understands it."""

    status: int | str | None
    detail: str
    again: bool  # worth another try now
    retry_after: str | None = None
    transient: bool | None = None  # may the step be tried later; default: ``again``


class _Failed(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


def with_retries(
    policy: Backoff,
    system: str,
    operation: str,
    asset: str,
    call: Callable[[], T],
    classify: Callable[[Exception], Failure | None],
) -> T:
    """``call()``, tried again while its failures say so, up to ``policy.attempts`` tries.

    ``classify`` returns None for an exception that is not a failure of the target (it is
    raised as it is)."""

    def attempt() -> T:
        try:
            return call()
        except _Failed:
            raise
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            raise _Failed(failure) from None

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = error.failure.retry_after if isinstance(error, _Failed) else None
        return policy.delay(state.attempt_number, retry_after)

    retrying = Retrying(
        stop=stop_after_attempt(max(1, policy.attempts)),
        wait=wait,
        retry=retry_if_exception(lambda error: isinstance(error, _Failed) and error.failure.again),
        reraise=True,
    )
    try:
        return retrying(attempt)
    except _Failed as failed:
        f = failed.failure
        transient = f.again if f.transient is None else f.transient
        raise ConnectorError(system, operation, asset, f.status, f.detail, transient=transient) from None

