"""The conformance suite: every declared system (connectors/systems.py) passes the same checks,
against its own stand-in (the sandbox fake, the real local server, or an embedded database),
through a fault-injecting proxy. A new system is covered by its declaration alone.

- its health check answers (``check()``, the read `aisoar connectors --check` makes);
- a 429 with ``Retry-After`` is waited out, then the call succeeds;
- a storm of 5xx ends, after bounded tries, in a ConnectorError that names the system;
- an answer that does not come in time is a timeout error, not a hang;
- in plan mode its example change raises ``Planned`` and no write reaches the target;
- no secret of its settings appears in any error or log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from connectors.errors import ConnectorError, Planned
from connectors.system import ConnectOptions, StandIn, System
from connectors.systems import SYSTEMS
from sandbox.real_servers import RealServers
from sandbox.stack import Sandbox
from tests.faults import fault_proxy, server_error, slow, too_many

FAST = {"attempts": 3, "backoff": 0.01, "max_backoff": 0.5}  # Retry-After is capped at 4 x max_backoff
HTTP_SYSTEMS = [system for system in SYSTEMS if system.url_field]
READ_METHODS = {"GET", "HEAD"}


@pytest.fixture(scope="module")
def real_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServers]:
    """The real servers of the systems that have one, started as `aisoar up` starts them."""
    servers = RealServers(tmp_path_factory.mktemp("conformance-servers"))
    yield servers
    servers.stop()


@pytest.fixture(scope="module")
def fakes() -> Iterator[Sandbox]:
    sandbox = Sandbox.create()
    sandbox.seed_demo()
    yield sandbox
    sandbox.stop()


@pytest.fixture(scope="module")
def running() -> dict[str, dict[str, str]]:
    """The raw settings of each stand-in started so far, by system: each starts once."""
    return {}


@pytest.fixture()
def raw(
    system: System[Any, Any],
    running: dict[str, dict[str, str]],
    fakes: Sandbox,
    real_servers: RealServers,
    tmp_path: Path,
) -> dict[str, str]:
    """The system's raw settings (``<name>_<field>``), pointing at its running stand-in."""
    if system.stand_in is StandIn.embedded:
        return {f"{system.name}_{system.required[0]}": str(tmp_path / system.name)}
    if system.name not in running:
        env = fakes.start((system.name,)) if system.stand_in is StandIn.fake else real_servers.start((system.name,))
        running[system.name] = {key.removeprefix("AISOAR_").lower(): value for key, value in env.items()}
    return dict(running[system.name])


def proxied(system: System[Any, Any], raw: dict[str, str], proxy_url: str) -> dict[str, str]:
    """``raw`` with the system's base URL replaced by the proxy's (same path)."""
    key = f"{system.name}_{system.url_field}"
    upstream = raw[key]
    path = upstream.split("://", 1)[1].partition("/")[2]
    return {**raw, key: f"{proxy_url}/{path}" if path else proxy_url}


def upstream(system: System[Any, Any], raw: dict[str, str]) -> str:
    url = raw[f"{system.name}_{system.url_field}"]
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.partition('/')[0]}"


def build(system: System[Any, Any], raw: dict[str, str], timeout: float = 5.0, plan: bool = False) -> Any:
    return system.build(system.section(raw), ConnectOptions(timeout=timeout, plan=plan, retry=FAST))


def is_write(method: str, body: bytes) -> bool:
    """A request that can change the target. The AWS query API reads by POST (``Action=Get*``
    / ``List*``); other APIs read by GET (or search by POST, which no plan-mode change sends)."""
    if method in READ_METHODS:
        return False
    action = parse_qs(body.decode(errors="replace")).get("Action", [""])[0]
    return not action.startswith(("Get", "List"))


def ids(system: System[Any, Any]) -> str:
    return system.name


parametrize_http = pytest.mark.parametrize("system", HTTP_SYSTEMS, ids=ids)
parametrize_all = pytest.mark.parametrize("system", SYSTEMS, ids=ids)


@parametrize_all
def test_its_health_check_answers(system: System[Any, Any], raw: dict[str, str]) -> None:
    assert system.missing(system.section(raw)) == [], "the stand-in's settings do not configure the system"
    detail = build(system, raw).check()
    assert isinstance(detail, str) and detail


@parametrize_http
def test_a_429_with_retry_after_is_waited_out(system: System[Any, Any], raw: dict[str, str]) -> None:
    with fault_proxy(upstream(system, raw)) as (proxy, url):
        proxy.script(too_many("1"))
        assert build(system, proxied(system, raw, url)).check()
        seen = proxy.matching()
    assert len(seen) >= 2 and seen[0].fault is not None and seen[0].fault.status == 429, seen
    assert seen[1].at - seen[0].at >= 0.9, "Retry-After: 1 was not honoured"


@parametrize_http
def test_a_5xx_storm_ends_in_a_clear_bounded_error(
    system: System[Any, Any], raw: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with fault_proxy(upstream(system, raw)) as (proxy, url):
        proxy.script(*[server_error() for _ in range(50)])
        with pytest.raises(ConnectorError) as caught:
            build(system, proxied(system, raw, url)).check()
        tries = len(proxy.matching())
    assert 1 < tries <= FAST["attempts"], f"{tries} tries: retries must be bounded by the policy"
    message = str(caught.value)
    assert message.startswith(system.title), message
    assert "500" in message, message
    _no_secret(system, raw, message, repr(caught.value), caplog.text)


@parametrize_http
def test_a_slow_answer_is_a_timeout_not_a_hang(
    system: System[Any, Any], raw: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with fault_proxy(upstream(system, raw)) as (proxy, url):
        proxy.script(*[slow(2.0) for _ in range(50)])
        started = time.monotonic()
        with pytest.raises(ConnectorError) as caught:
            build(system, proxied(system, raw, url), timeout=0.3).check()
        took = time.monotonic() - started
    assert caught.value.status == "timeout", str(caught.value)
    assert took < 2.0 * FAST["attempts"], f"the timeout was not applied ({took:.1f} s)"
    _no_secret(system, raw, str(caught.value), caplog.text)


@parametrize_all
def test_plan_mode_changes_nothing(
    system: System[Any, Any], raw: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert system.example_change is not None, f"{system.name} declares no example change to prove plan mode"
    if system.example_setup is not None:
        system.example_setup(build(system, raw))
    if system.url_field is None:
        with pytest.raises(Planned) as caught:
            system.example_change(build(system, raw, plan=True))
    else:
        with fault_proxy(upstream(system, raw)) as (proxy, url):
            with pytest.raises(Planned) as caught:
                system.example_change(build(system, proxied(system, raw, url), plan=True))
            writes = [(s.method, s.path) for s in proxy.seen if is_write(s.method, s.body)]
        assert not writes, f"plan mode sent writes to the target: {writes}"
    assert "nothing was changed" in str(caught.value)
    _no_secret(system, raw, str(caught.value), caplog.text)


def _no_secret(system: System[Any, Any], raw: dict[str, str], *texts: str) -> None:
    for secret in system.secrets(system.section(raw)):
        for text in texts:
            assert secret not in text, f"a secret of {system.name} leaked into an error or a log line"


def test_every_system_is_covered() -> None:
    """Each declared system has a stand-in this suite can start and an example change."""
    for system in SYSTEMS:
        assert system.example_change is not None, system.name
        if system.stand_in is StandIn.fake:
            assert system.name in Sandbox.FAKES, system.name
        if system.stand_in is StandIn.server:
            assert system.name in RealServers.SERVERS, system.name
