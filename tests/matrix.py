"""The checks every connector passes (issue: connectors for every CoSAI action), shared so
each connector's test module states only what is specific to it.

Each check drives one connector call through a ``FaultProxy`` in front of the real server
or stand-in and asserts what the caller sees.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from connectors.errors import ConnectorError, Planned
from tests.faults import FaultProxy, server_error, slow, too_many


def retry_after_then_success(proxy: FaultProxy, match: str, call: Callable[[], Any]) -> Any:
    """A 429 with ``Retry-After: 1`` is waited out and the call then succeeds."""
    proxy.script(too_many("1"), match=match)
    result = call()
    seen = proxy.matching()
    assert len(seen) >= 2, f"expected a retry after the 429, saw {[(s.method, s.path) for s in seen]}"
    assert seen[0].fault is not None and seen[0].fault.status == 429
    waited = seen[1].at - seen[0].at
    assert waited >= 0.9, f"Retry-After: 1 was not honoured (retried after {waited:.2f}s)"
    return result


def storm_exhausts_retries(
    proxy: FaultProxy, match: str, call: Callable[[], Any], attempts: int, starts_with: str
) -> ConnectorError:
    """A 500 on every attempt ends, after ``attempts`` tries, in an error naming system,
    operation, asset and status."""
    proxy.script(*[server_error() for _ in range(attempts + 5)], match=match)
    with pytest.raises(ConnectorError) as caught:
        call()
    assert len(proxy.matching()) == attempts, f"expected {attempts} attempts, saw {len(proxy.matching())}"
    message = str(caught.value)
    assert message.startswith(starts_with), message
    assert "HTTP 500" in message, message
    return caught.value


def times_out(proxy: FaultProxy, match: str, call: Callable[[], Any], attempts: int, delay: float = 2.0) -> None:
    """A server that does not answer in time gives a timeout error, not a hang."""
    proxy.script(*[slow(delay) for _ in range(attempts + 2)], match=match)
    started = time.monotonic()
    with pytest.raises(ConnectorError) as caught:
        call()
    assert caught.value.status == "timeout", str(caught.value)
    assert time.monotonic() - started < delay * (attempts + 1), "the timeout was not applied"


def plan_changes_nothing(call: Callable[[], Any], state: Callable[[], Any], operation: str) -> Planned:
    """In plan mode the call says what it would do, and the target's state is unchanged."""
    before = state()
    with pytest.raises(Planned) as caught:
        call()
    assert operation in str(caught.value), str(caught.value)
    assert "nothing was changed" in str(caught.value)
    assert state() == before, "plan mode changed the target"
    return caught.value


def secret_absent(secret: str, *texts: str) -> None:
    """The credential appears in none of the captured logs, errors or results."""
    assert secret, "no secret given"
    for text in texts:
        assert secret not in text, "a secret leaked into captured output"
