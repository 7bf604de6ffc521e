"""A burst of alerts: how fast aisoar contains it, beside the plain Prefect way, in the same run.

Phases (``--phase burst,sustained,postgres,storm-postgres``; default: burst and sustained, and
postgres with ``--postgres``), each in a process and on a Prefect server of its own (locked
with basic auth as `aisoar up` locks its own), with the sandbox fakes and aisoar's stack
(ingress, dispatcher, playbook runtime, at their default settings, printed) in the phase's
process, all on loopback:

  burst      100 distinct leaked-key alerts (examples/alerts/leaked-openai-key.json, each with
             a key of its own seeded at the sandbox gateway and provider) posted at once,
             signed, to POST /webhooks/generic after one warm-up alert; for each key, the time
             from the burst's first post until its /key/block reaches the (fake) LiteLLM
             gateway; the runs' states read from Prefect's API; the ingress's ack latency.
             Beside it, the plain Prefect way: 100 run_deployment() calls at once to
             bench/plain_prefect_flow.py served with flow.serve() and its default settings,
             each run's task blocking a key of its own. Target: every key blocked within 10 s
             of the first post (SQLite).
  sustained  an alert storm at --rate alerts/s (500) for --seconds (60): one leaked key (one
             fingerprint), each alert a delivery of its own, paced open-loop by the wall clock
             from a sender process of its own (latency counted from the scheduled send; the
             sender gives up on an answer after --request-timeout, 10 s); the ingress's ack
             latency, then every accepted alert read back from the store (Store.alert_record)
             and from the incident; memory (RSS) of this process and the Prefect server's
             process tree before, at the storm's end and after. The generic source's rate
             limit is raised for it (a bench-only sources folder).
  postgres   the burst phase with the Prefect server and aisoar's store on a throwaway
             PostgreSQL cluster (tests/servers/postgres.py). Target: every key within 5 s.
             With --serve --replicas N: N `aisoar serve` replicas on the one store, the
             posts spread over them in turn as a load balancer would.
  storm-postgres
             the sustained phase on such a cluster (the production shape's store: its writers
             do not take turns as SQLite's do).

Keys not blocked within --timeout (180 s) of the first post are reported as not blocked, and
the inbox's dispatch is awaited at most --drain-timeout (600 s): nothing waits forever.
Writes each phase's figures into bench/burst.last.json (beside the other phases' latest).
Usage: python bench/burst.py [--phase burst,sustained,postgres,storm-postgres] [--postgres]
           [--alerts 100] [--timeout 180] [--no-baseline] [--rate 500] [--seconds 60] [--drain-timeout 600]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import yaml  # noqa: E402

from aisoar.config import PROJECT_ROOT  # noqa: E402
from aisoar.ingress.auth import signed_headers  # noqa: E402
from aisoar.store.schema import aware, inbox, timeline  # noqa: E402
from bench.common import (  # noqa: E402
    FAILED_STATES,
    LEAKED_KEY_PLAYBOOK,
    PLAIN_DEPLOYMENT,
    SECRET,
    AisoarStack,
    PrefectClientEnv,
    ServedAisoar,
    ServedPlainFlow,
    flow_runs,
    leaked_key_alert,
    machine,
    percentile,
    prefect_environment,
    process_tree,
    rss_bytes,
    runtime_settings,
    seed_leaked_key,
    signed_delivery,
    start_prefect,
    start_sandbox,
    state_counts,
)
from cli.prefect_server import PrefectServer  # noqa: E402
from sandbox.serving import free_port  # noqa: E402

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

TARGET_S = {"sqlite": 10.0, "postgres": 5.0}  # every key blocked within this of the first post
RESTING = ("PAUSED", "COMPLETED", "FAILED", "CRASHED", "CANCELLED")  # waiting for an answer, or ended
SETTLE_S = 30.0  # after the blocks: how long the runs may take to reach their waiting or final state
SENDER_FLAG = "--storm-sender"
OUT = HERE / "burst.last.json"


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    client: PrefectClientEnv
    settings_shown: bool = False


# -- the burst -----------------------------------------------------------------------------


def blocked_after(sandbox: Sandbox, hashes: list[str], t0: float, timeout: float) -> dict[str, float]:
    """Key hash -> seconds from ``t0`` until its /key/block reached the gateway, for the keys
    blocked before ``t0 + timeout``."""
    found: dict[str, float] = {}
    while True:
        for marker, at in _first_blocks(sandbox, hashes).items():
            found.setdefault(marker, at - t0)
        if len(found) == len(hashes) or time.time() > t0 + timeout:
            return {h: s for h, s in found.items() if s <= timeout}
        time.sleep(0.05)


def _first_blocks(sandbox: Sandbox, hashes: list[str]) -> dict[str, float]:
    wanted = set(hashes)
    found: dict[str, float] = {}
    for request in list(sandbox.litellm.requests):
        if request["path"] == "/key/block":
            key = str((request.get("body") or {}).get("key", ""))
            if key in wanted and key not in found:
                found[key] = float(request["t"])
    return found


def settled_runs(
    client: PrefectClientEnv, deployment_id: str, expected: int, timeout: float, before: set[str] | None = None
) -> list[dict[str, Any]]:
    """The deployment's runs (but those in ``before``: the warm-up's) once ``expected`` of them
    wait (Paused) or have ended, or at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [r for r in flow_runs(client, [deployment_id]) if r["id"] not in (before or set())]
        resting = [r for r in runs if (r.get("state") or {}).get("type") in RESTING]
        if (len(runs) >= expected and len(resting) == len(runs)) or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


async def post_at_once(
    urls: list[str], deliveries: list[tuple[bytes, dict[str, str]]]
) -> tuple[float, list[tuple[float, str]]]:
    """Every delivery posted at once (a connection each), to ``urls`` in turn; returns when the
    first post was made (wall clock) and, for each, (seconds until its answer, its status or the
    error)."""
    limits = httpx.Limits(max_connections=len(deliveries), max_keepalive_connections=len(deliveries))
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[float, str]:
            started = time.perf_counter()
            try:
                answer = await client.post(f"{url}/webhooks/generic", content=body, headers=headers)
                status = str(answer.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            return time.perf_counter() - started, status

        t0 = time.time()
        answers = await asyncio.gather(
            *(post(urls[i % len(urls)], body, headers) for i, (body, headers) in enumerate(deliveries))
        )
    return t0, list(answers)


def burst_aisoar(
    bench: Bench, sandbox: Sandbox, env: dict[str, str], work: Path, store_url: str | None
) -> dict[str, Any]:
    n, timeout = bench.args.alerts, bench.args.timeout
    overrides = {"database_url": store_url} if store_url else {}
    kind = ServedAisoar if bench.args.serve else AisoarStack
    replicas = bench.args.replicas
    if replicas > 1 and not (bench.args.serve and store_url):
        raise SystemExit("--replicas takes --serve and the postgres phase (replicas share a PostgreSQL store)")
    stacks: list[Any] = []
    try:
        for i in range(replicas):  # each with its own data directory and name, on the one store
            named = {"replica_id": f"bench-serve-{i}"} if replicas > 1 else {}
            place = work / f"replica-{i}" if replicas > 1 else work
            stacks.append(kind(place, env, **overrides, **named, **served_overrides(bench.args)).start())
    except BaseException:
        for started in stacks:
            started.stop()
        raise
    stack = stacks[0]
    try:
        settings = runtime_settings(stack.settings)
        if not bench.settings_shown:
            print(f"  aisoar runtime settings (defaults, but for --ingress-processes): {settings}")
            bench.settings_shown = True
        deployment = stack.deployment_id(LEAKED_KEY_PLAYBOOK)
        warmups = bench.args.warmup * len(stacks)
        for i in range(warmups):  # imports, connections, the engine's first run, on each replica
            key = seed_leaked_key(sandbox, f"W{i:03d}")
            body, headers = signed_delivery(leaked_key_alert(key, f"warmup-{i}"))
            url = stacks[i % len(stacks)].url
            httpx.post(f"{url}/webhooks/generic", content=body, headers=headers, timeout=30).raise_for_status()
            if not blocked_after(sandbox, [key.gateway_hash], time.time(), 60):
                raise RuntimeError("the warm-up alert was not contained within 60 s; see the stack's log")
        warm = {r["id"] for r in settled_runs(bench.client, deployment, warmups, 60)}
        keys = [seed_leaked_key(sandbox, f"{i:04d}") for i in range(n)]
        deliveries = [signed_delivery(leaked_key_alert(key, f"burst-{i}")) for i, key in enumerate(keys)]
        t0, answers = asyncio.run(post_at_once([s.url for s in stacks], deliveries))
        print(f"  aisoar: {n} alerts posted in {max(s for s, _ in answers):.1f} s; waiting for the blocks")
        blocked = blocked_after(sandbox, [k.gateway_hash for k in keys], t0, timeout)
        runs = settled_runs(bench.client, deployment, n, SETTLE_S, before=warm)
        counts = state_counts(runs)
        phases = burst_phases(stack.store, t0)
    finally:
        for started in stacks:
            started.stop()
    acks = [seconds for seconds, status in answers if status == "202"]
    return {
        "n": n,
        "blocked": len(blocked),
        "block_s": sorted(blocked.values()),
        "acks": _statuses(answers),
        "ack_s": sorted(acks),
        "runs": len(runs),
        "run_states": counts,
        "failed_runs": sum(counts.get(s, 0) for s in FAILED_STATES),
        "settings": {k: str(v) for k, v in settings.items()},
        "phases": phases,
        "served": bench.args.serve,
        "replicas": len(stacks),
    }


PHASES = (
    ("received", "correlated", "waiting for a dispatch worker"),
    ("correlated", "blocked", "correlation, claim, head start up to the verified block"),
    ("blocked", "run_running", "the run created and started after the block"),
)


def burst_phases(store: Any, t0: float) -> dict[str, dict[str, float]]:
    """Where a burst's time goes, per incident, from the store: the alert received, correlated
    (its first timeline entry), the key's block recorded, the run's start recorded."""
    since = datetime.fromtimestamp(t0, UTC)
    marks: dict[str, dict[str, datetime]] = {}
    with store.engine.connect() as conn:
        for row in conn.execute(
            sa.select(inbox.c.incident_id, inbox.c.received_at).where(inbox.c.incident_id.is_not(None))
        ):
            received = aware(row.received_at)
            if received >= since:
                marks.setdefault(row.incident_id, {}).setdefault("received", received)
        rows = conn.execute(
            sa.select(timeline.c.incident_id, timeline.c.at, timeline.c.kind, timeline.c.step_id, timeline.c.message)
            .where(timeline.c.incident_id.in_(list(marks)))
            .order_by(timeline.c.seq)
        )
        for row in rows:
            mark = marks[row.incident_id]
            at = aware(row.at)
            if row.kind == "alert":
                mark.setdefault("correlated", at)
            elif row.kind == "step" and row.step_id == "block-key-at-gateway":
                mark.setdefault("blocked", at)
            elif row.kind == "run" and row.message.startswith(f"playbook {LEAKED_KEY_PLAYBOOK} running"):
                mark.setdefault("run_running", at)
    out: dict[str, dict[str, float]] = {}
    for start, end, _ in PHASES:
        spans = sorted((m[end] - m[start]).total_seconds() for m in marks.values() if start in m and end in m)
        if spans:
            out[f"{start}->{end}"] = {"n": len(spans), "p50": spans[len(spans) // 2], "max": spans[-1]}
    return out


def _statuses(answers: list[tuple[float, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, status in answers:
        counts[status] = counts.get(status, 0) + 1
    return counts


async def run_deployments_at_once(hashes: list[str]) -> tuple[float, list[tuple[float, str]]]:
    """run_deployment() for every key at once; returns when the first call was made and, for
    each call, (seconds until it returned, "ok" or the error)."""
    from prefect.deployments import arun_deployment

    async def call(key_hash: str) -> tuple[float, str]:
        started = time.perf_counter()
        try:
            await arun_deployment(PLAIN_DEPLOYMENT, parameters={"key_hash": key_hash}, timeout=0)
            outcome = "ok"
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {str(exc)[:120]}"
        return time.perf_counter() - started, outcome

    t0 = time.time()
    answers = await asyncio.gather(*(call(h) for h in hashes))
    return t0, list(answers)


def burst_plain(bench: Bench, sandbox: Sandbox, env: dict[str, str], work: Path) -> dict[str, Any]:
    import secrets

    n, timeout = bench.args.alerts, bench.args.timeout
    served = ServedPlainFlow(bench.client, env, work / "serve.log").start()
    try:
        for i in range(bench.args.warmup):
            key_hash = sandbox.litellm.add_key(f"sk-plain-W{i:03d}" + secrets.token_hex(16))
            t0, _ = asyncio.run(run_deployments_at_once([key_hash]))
            if not blocked_after(sandbox, [key_hash], t0, 60):
                raise RuntimeError(f"the served flow's warm-up run did not block its key within 60 s; see {served.log}")
        warm = {r["id"] for r in settled_runs(bench.client, served.deployment_id, bench.args.warmup, 60)}
        hashes = [sandbox.litellm.add_key(f"sk-plain-{i:04d}" + secrets.token_hex(16)) for i in range(n)]
        t0, answers = asyncio.run(run_deployments_at_once(hashes))
        print(f"  plain Prefect: {n} runs created in {max(s for s, _ in answers):.1f} s; waiting for the blocks")
        blocked = blocked_after(sandbox, hashes, t0, timeout)
        runs = settled_runs(bench.client, served.deployment_id, n, SETTLE_S, before=warm)
        counts = state_counts(runs)
    finally:
        served.stop()
    errors = [outcome for _, outcome in answers if outcome != "ok"]
    return {
        "n": n,
        "blocked": len(blocked),
        "block_s": sorted(blocked.values()),
        "call_s": sorted(s for s, outcome in answers if outcome == "ok"),
        "call_errors": errors[:10],
        "call_errors_n": len(errors),
        "runs": len(runs),
        "run_states": counts,
        "failed_runs": sum(counts.get(s, 0) for s in FAILED_STATES),
    }


@contextmanager
def databases(database: str) -> Iterator[tuple[str | None, str | None]]:
    """The Prefect server's and aisoar's store's database URLs for a phase: on ``postgres`` a
    throwaway cluster, stopped when the phase ends; on ``sqlite`` (None, None): their defaults."""
    if database != "postgres":
        yield None, None
        return
    cluster, prefect_url, store_url = start_postgres()
    try:
        yield prefect_url, store_url
    finally:
        cluster.stop()


def start_postgres() -> tuple[Any, str, str]:
    """A throwaway PostgreSQL cluster (tests/servers/postgres.py) with a database for Prefect and
    one for aisoar's store; returns it and the two URLs."""
    try:
        from tests.servers.postgres import Postgres
    except ImportError as exc:
        raise SystemExit(f"--postgres needs tests/servers/postgres.py (Postgres): {exc}") from None
    if "database_url" not in inspect.signature(PrefectServer).parameters:
        raise SystemExit("--postgres needs cli.prefect_server.PrefectServer(database_url=...), not there yet")
    missing = [name for name in ("psycopg", "asyncpg") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"--postgres needs {' and '.join(missing)}: pip install -e '.[postgres]'")
    cluster = Postgres.temporary()  # under /tmp, reachable by the unprivileged user it runs as under root
    cluster.start()
    cluster.create_database("prefect")
    cluster.create_database("aisoar")
    return cluster, cluster.url("prefect", driver="asyncpg"), cluster.url("aisoar", driver="psycopg")


def phase_burst(bench: Bench, database: str) -> dict[str, Any]:
    work = bench.work / f"burst-{database}"
    work.mkdir(parents=True)
    with databases(database) as (prefect_url, store_url):
        server = start_prefect(work / "prefect-server", bench.client, prefect_url)
        try:
            sandbox, env = start_sandbox()
            try:
                result = {"database": database, "aisoar": burst_aisoar(bench, sandbox, env, work, store_url)}
                if not bench.args.no_baseline:
                    try:
                        result["plain"] = burst_plain(bench, sandbox, env, work)
                    except Exception as exc:  # aisoar's figures stand without the baseline
                        result["plain_error"] = f"{type(exc).__name__}: {exc}"
            finally:
                sandbox.stop()
        finally:
            server.stop()
    show_burst(result, bench.args.timeout)
    return result


def _seconds(row: dict[str, Any], q: float, timeout: float) -> str:
    """The q-quantile of the n keys' times to block, a key not blocked counting as never."""
    times = row["block_s"] + [float("inf")] * (row["n"] - row["blocked"])
    value = percentile(times, q) if times else float("inf")
    return f"> {timeout:.0f}" if value == float("inf") else f"{value:.1f}"


def show_burst(result: dict[str, Any], timeout: float) -> None:
    database = result["database"]
    aisoar, plain = result["aisoar"], result.get("plain")
    print()
    title = f"burst on {database}: first post -> each /key/block"
    print(f"{title:50} {'n':>4} {'blocked':>8} {'first s':>8} {'p50 s':>7} {'max s':>7} {'failed/crashed runs':>20}")
    replicas = int(aisoar.get("replicas", 1))
    shape = "`aisoar serve` process" if aisoar.get("served") else "in the bench process"
    if replicas > 1:
        shape = f"{replicas} `aisoar serve` replicas"
    rows = [(f"aisoar ({shape})", aisoar)]
    if plain is not None:
        rows.append(("plain Prefect (run_deployment -> serve())", plain))
    for name, row in rows:
        print(
            f"{name:50} {row['n']:>4} {row['blocked']:>8} {_seconds(row, 0.0, timeout):>8} "
            f"{_seconds(row, 0.5, timeout):>7} "
            f"{_seconds(row, 1.0, timeout):>7} {row['failed_runs']:>20}"
        )
    if "plain_error" in result:
        print(f"  plain Prefect: not measured: {result['plain_error']}")
    for name, row in rows:
        print(f"  {name.split(' (')[0]} runs by state: {row['run_states']} ({row['runs']} runs for {row['n']} alerts)")
    if aisoar["ack_s"]:
        print(
            f"  aisoar ingress ack (202): p50 {percentile(aisoar['ack_s'], 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(aisoar['ack_s'], 0.99) * 1000:.0f} ms; answers {aisoar['acks']}"
        )
    for start, end, what in PHASES:
        span = aisoar.get("phases", {}).get(f"{start}->{end}")
        if span:
            print(f"  aisoar {start} -> {end} ({what}): p50 {span['p50']:.2f} s, max {span['max']:.2f} s")
    if plain is not None and plain["call_s"]:
        print(
            f"  plain run_deployment() returned: p50 {percentile(plain['call_s'], 0.5) * 1000:.0f} ms, "
            f"max {max(plain['call_s']) * 1000:.0f} ms; calls failed: {plain['call_errors_n']}"
        )
    target = TARGET_S[database]
    met = aisoar["blocked"] == aisoar["n"] and max(aisoar["block_s"], default=float("inf")) <= target
    print(
        f"  target: every key blocked within {target:.0f} s of the first post ({database}): "
        f"{aisoar['blocked']}/{aisoar['n']} blocked, last after {_seconds(aisoar, 1.0, timeout)} s -> "
        f"{'met' if met else 'MISSED'}"
    )
    unblocked = aisoar["n"] - aisoar["blocked"]
    if unblocked:
        print(f"  not blocked within {timeout:.0f} s: {unblocked} keys (aisoar)")


# -- the storm -----------------------------------------------------------------------------


def storm_sender(spec_path: Path) -> int:
    """The sender process: posts the storm open-loop, writes what it saw."""
    spec = json.loads(spec_path.read_text())
    sent = asyncio.run(_storm(spec))
    Path(spec["out"]).write_text(json.dumps(sent))
    return 0


class LoopbackPool:
    """HTTP/1.1 POSTs over at most ``size`` kept-alive connections, in plain asyncio. An open-loop
    sender keeps thousands of requests waiting for a connection when the server falls behind;
    with httpx's pool the sender itself stalled here (no answer counted for over a minute after
    1,500 requests at 500/s), so it measured itself instead of the ingress."""

    def __init__(self, url: str, size: int) -> None:
        parsed = httpx.URL(url)
        self.host, self.port = parsed.host, parsed.port or 80
        self.slots = asyncio.Semaphore(size)  # FIFO: the requests get connections in the order sent
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open: set[asyncio.StreamWriter] = set()

    def request(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        """The bytes of a POST (built before the storm: the sender's own time goes to sending)."""
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    async def post(self, request: bytes) -> tuple[int, bytes]:
        async with self.slots:
            while True:
                kept = bool(self.idle)
                reader, writer = self.idle.pop() if kept else await self._connect()
                reusable = False
                try:
                    try:
                        writer.write(request)
                        await writer.drain()
                        status_line = await reader.readline()
                    except (ConnectionResetError, BrokenPipeError):
                        if not kept:
                            raise
                        status_line = b""
                    if not status_line and kept:
                        # The server had closed the idle connection (its keep-alive timeout):
                        # send on a new one, as an HTTP client's pool does.
                        continue
                    status = int(status_line.split()[1])
                    length, close = 0, False
                    while (line := await reader.readline()) not in (b"\r\n", b""):
                        name, _, value = line.decode("latin-1").partition(":")
                        if name.strip().lower() == "content-length":
                            length = int(value)
                        elif name.strip().lower() == "connection":
                            close = value.strip().lower() == "close"
                    answer = await reader.readexactly(length)
                    reusable = not close
                    return status, answer
                finally:
                    if reusable:
                        self.idle.append((reader, writer))
                    else:  # answered with close, failed, or given up on mid-request
                        self.open.discard(writer)
                        writer.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.open.add(writer)
        return reader, writer

    def close(self) -> None:
        for writer in self.open:
            writer.close()


async def _storm(spec: dict[str, Any]) -> dict[str, Any]:
    rate, total = float(spec["rate"]), int(spec["rate"] * spec["seconds"])
    template, prefix = spec["alert"], spec["id_prefix"]
    sent: list[list[Any]] = [[] for _ in range(total)]
    pool = LoopbackPool(spec["url"], int(spec["connections"]))

    planned = time.time()
    requests = []
    for index in range(total):  # each signed for about the second it is due (the replay window is minutes)
        body = json.dumps({**template, "id": f"{prefix}-{index}"}).encode()
        signed = signed_headers(spec["secret"], body, timestamp=int(planned + index / rate))
        requests.append(pool.request("/webhooks/generic", body, signed))
    start = time.perf_counter() + 0.1
    wall_start = time.time() + 0.1

    async def send(index: int, scheduled: float) -> None:
        late = time.perf_counter() - scheduled
        alert_id = None
        try:  # a sender gives up after request_timeout in all (GitHub's webhooks: 10 s)
            posted = pool.post(requests[index])
            code, answer = await asyncio.wait_for(posted, timeout=spec["request_timeout"])
            status = str(code)
            if code in (200, 202):
                alert_id = json.loads(answer).get("alert_id")
        except TimeoutError:
            status = "no answer in time"
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            status = type(exc).__name__
        sent[index] = [late, time.perf_counter() - scheduled, status, alert_id]

    tasks: list[asyncio.Task[None]] = []
    index = 0

    async def progress() -> None:  # in sender.log: how the storm goes
        while True:
            await asyncio.sleep(2)
            done = sum(1 for row in sent if row)
            print(f"{time.perf_counter() - start:6.1f} s: sent {index}, answered {done}", file=sys.stderr, flush=True)

    reporter = asyncio.create_task(progress())
    while index < total:
        now = time.perf_counter()
        due = start + index / rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        while index < total and start + index / rate <= now:  # behind: send what is due at once
            tasks.append(asyncio.create_task(send(index, start + index / rate)))
            index += 1
    sending_s = time.perf_counter() - start
    await asyncio.gather(*tasks)
    reporter.cancel()
    pool.close()
    return {"wall_start": wall_start, "sending_s": sending_s, "sent": sent}


class PeakRss(threading.Thread):
    """The highest RSS of the processes ``pids()`` names, sampled every half second."""

    def __init__(self, pids: Any) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pids = pids
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.peak = max(self.peak, rss_bytes(self.pids()))

    def stop(self) -> int:
        self.done.set()
        self.join(5)
        return self.peak


def bench_sources(folder: Path, per_minute: int) -> Path:
    """A bench-only sources folder: the shipped generic source with its rate limit raised."""
    folder.mkdir(parents=True)
    spec = yaml.safe_load((PROJECT_ROOT / "sources" / "generic.yaml").read_text())
    spec["rate_limit_per_minute"] = min(1_000_000, per_minute)
    (folder / "generic.yaml").write_text(yaml.safe_dump(spec))
    return folder


def phase_sustained(bench: Bench, database: str) -> dict[str, Any]:
    args = bench.args
    work = bench.work / f"sustained-{database}"
    work.mkdir(parents=True)
    sources = bench_sources(work / "sources", int(args.rate * 60 * 2))
    with databases(database) as (prefect_url, store_url):
        result = _sustained(bench, work, sources, prefect_url, store_url)
    result["database"] = database
    show_sustained(result)
    return result


def _sustained(
    bench: Bench, work: Path, sources: Path, prefect_url: str | None, store_url: str | None
) -> dict[str, Any]:
    args = bench.args
    server = start_prefect(work / "prefect-server", bench.client, prefect_url)
    sandbox, env = start_sandbox()
    stack: AisoarStack | ServedAisoar | None = None
    sender: subprocess.Popen[bytes] | None = None
    try:
        kind = ServedAisoar if bench.args.serve else AisoarStack
        overrides = {"database_url": store_url} if store_url else {}
        stack = kind(work, env, sources_dir=sources, **overrides, **served_overrides(bench.args)).start()
        store = stack.store
        if not bench.settings_shown:
            shown = runtime_settings(stack.settings)
            print(f"  aisoar runtime settings (defaults, but for --ingress-processes): {shown}")
            bench.settings_shown = True
        key = seed_leaked_key(sandbox, "STORM")
        server_pid = server.process.pid if server.process else -1

        def memory() -> dict[str, int]:
            ours = rss_bytes(process_tree(os.getpid(), exclude=[server_pid, sender.pid if sender else -1]))
            prefect = rss_bytes(process_tree(server_pid))
            return {"bench": ours, "prefect": prefect, "total": ours + prefect}

        before = memory()
        peak = PeakRss(lambda: process_tree(os.getpid(), exclude=[sender.pid if sender else -1]))
        peak.start()
        spec = {
            "url": stack.url,
            "secret": SECRET,
            "rate": args.rate,
            "seconds": args.seconds,
            "alert": leaked_key_alert(key, "storm"),
            "id_prefix": "storm",
            "connections": args.connections,
            "request_timeout": args.request_timeout,
            "out": str(work / "storm.json"),
        }
        (work / "storm-spec.json").write_text(json.dumps(spec))
        print(f"  storm: {args.rate:g} alerts/s for {args.seconds:g} s from a sender process of its own")
        with (work / "sender.log").open("wb") as log:
            sender = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), SENDER_FLAG, str(work / "storm-spec.json")],
                stdout=log,
                stderr=log,
            )
        try:
            code = sender.wait(timeout=args.seconds + args.request_timeout + 60)
        except subprocess.TimeoutExpired:
            sender.kill()
            sender.wait(10)
            raise RuntimeError(f"the storm's sender did not finish; see {work / 'sender.log'}") from None
        if code != 0:
            raise RuntimeError(f"the storm's sender failed ({code}); see {work / 'sender.log'}")
        storm = json.loads((work / "storm.json").read_text())
        storm_end = storm["wall_start"] + args.seconds  # the last scheduled send
        after_storm = memory()
        print("  storm sent; waiting until the inbox is dispatched")
        drained = None
        while time.time() - storm_end < args.drain_timeout:
            if not store.pending_alerts(limit=1):
                drained = time.time() - storm_end
                break
            time.sleep(0.5)
        settled_runs(bench.client, stack.deployment_id(LEAKED_KEY_PLAYBOOK), 1, SETTLE_S)  # its one run
        verified = verify_storm(stack, sandbox, storm, key.gateway_hash, bench.client)
        after = memory()
        peak_rss = max(peak.stop(), after["total"])
    finally:
        if sender is not None and sender.poll() is None:
            sender.kill()
        if stack is not None:
            stack.stop()
        sandbox.stop()
        server.stop()
    result = {
        "rate": args.rate,
        "seconds": args.seconds,
        "sending_s": storm["sending_s"],
        **summarise_storm(storm["sent"]),
        "drained_after_s": drained,
        "drain_timeout_s": args.drain_timeout,
        **verified,
        "rss": {"before": before, "after_storm": after_storm, "after": after, "peak_total": peak_rss},
    }
    return result


def summarise_storm(sent: list[list[Any]]) -> dict[str, Any]:
    answered = [row for row in sent if row and row[2].isdigit()]
    latencies = sorted(row[1] for row in answered)
    late = sorted(row[0] for row in sent if row)
    statuses: dict[str, int] = {}
    for row in sent:
        status = row[2] if row else "not sent"
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "sent": len(sent),
        "statuses": dict(sorted(statuses.items())),
        "ack_ms": {
            "n": len(latencies),
            "p50": percentile(latencies, 0.5) * 1000 if latencies else None,
            "p99": percentile(latencies, 0.99) * 1000 if latencies else None,
            "max": latencies[-1] * 1000 if latencies else None,
        },
        "sender_late_ms": {
            "p99": percentile(late, 0.99) * 1000 if late else None,
            "max": late[-1] * 1000 if late else None,
        },
    }


def verify_storm(
    stack: AisoarStack | ServedAisoar,
    sandbox: Sandbox,
    storm: dict[str, Any],
    key_hash: str,
    client: PrefectClientEnv,
) -> dict[str, Any]:
    """Every accepted alert read back from the store (Store.alert_record), attached to the incident."""
    store = stack.store
    accepted = [row[3] for row in storm["sent"] if row and row[2] == "202" and row[3]]
    records = {alert_id: store.alert_record(alert_id) for alert_id in accepted}
    incidents = {r.incident_id for r in records.values() if r is not None and r.incident_id}
    incident_id = next(iter(incidents)) if len(incidents) == 1 else None
    attached_ids = set(store.get_incident(incident_id).alert_ids) if incident_id else set()
    missing = [a for a, r in records.items() if r is None]
    pending = [a for a, r in records.items() if r is not None and r.status == "pending"]
    attached = {a for a, r in records.items() if r is not None and r.incident_id == incident_id and a in attached_ids}
    elsewhere = [a for a, r in records.items() if r is not None and r.status != "pending" and a not in attached]
    with store.engine.connect() as conn:  # answered too late for the sender, or not: stored all the same
        stored = int(conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar() or 0)
    runs = flow_runs(client, [stack.deployment_id(LEAKED_KEY_PLAYBOOK)])
    blocks = [
        float(r["t"])
        for r in list(sandbox.litellm.requests)
        if r["path"] == "/key/block" and key_hash in json.dumps(r.get("body"))
    ]
    return {
        "accepted": len(accepted),
        "inbox_rows": stored,
        "incident_alerts": len(attached_ids),
        "in_store": len(accepted) - len(missing),
        "attached": len(attached),
        "not_yet_dispatched": len(pending),
        "missing": len(missing),
        "elsewhere": len(elsewhere),
        "missing_examples": missing[:5],
        "elsewhere_examples": elsewhere[:5],
        "incident_id": incident_id,
        "incidents": sum(store.incident_counts().values()),
        "incidents_of_accepted": len(incidents),
        "runs": len(runs),
        "run_states": state_counts(runs),
        "key_blocks": len(blocks),
        "blocked_after_s": min(blocks) - storm["wall_start"] if blocks else None,
    }


def _mb(value: int) -> str:
    return f"{value / 2**20:.0f} MB"


def show_sustained(r: dict[str, Any]) -> None:
    ack = r["ack_ms"]
    print()
    print(
        f"sustained on {r['database']}: {r['rate']:g} alerts/s for {r['seconds']:g} s, one leaked key (one "
        "fingerprint), each alert its own delivery; open loop"
    )
    print(
        f"  sent {r['sent']} in {r['sending_s']:.1f} s (the sender's own lateness: p99 "
        f"{r['sender_late_ms']['p99']:.1f} ms, max {r['sender_late_ms']['max']:.1f} ms)"
    )
    print(f"  answers: {r['statuses']}")
    if ack["n"]:
        print(f"{'ingress ack, from the scheduled send':50} {'n':>6} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
        print(f"{'  aisoar ingress':50} {ack['n']:>6} {ack['p50']:>9.1f} {ack['p99']:>9.1f} {ack['max']:>9.1f}")
    drained = r["drained_after_s"]
    print(
        "  inbox dispatched "
        + (
            f"{drained:.1f} s after the storm's last send"
            if drained is not None
            else f"NOT within {r['drain_timeout_s']:.0f} s"
        )
    )
    lost = r["missing"] + r["elsewhere"]
    print(
        f"  accepted {r['accepted']}: in the store {r['in_store']}, attached to {r['incident_id']} {r['attached']}, "
        f"not yet dispatched {r['not_yet_dispatched']}, missing {r['missing']}, elsewhere {r['elsewhere']} -> "
        f"{'nothing lost' if not lost else f'{lost} LOST'}"
    )
    print(
        f"  alerts in the inbox in all: {r['inbox_rows']} (with those stored but answered after the sender gave "
        f"up); the incident holds {r['incident_alerts']}"
    )
    print(
        f"  incidents in the store: {r['incidents']}; playbook runs: {r['runs']} {r['run_states']}; "
        f"/key/block requests for the key: {r['key_blocks']}"
        + (
            f" (the first {r['blocked_after_s']:.1f} s after the storm began)"
            if r["blocked_after_s"] is not None
            else ""
        )
    )
    rss = r["rss"]
    print(f"{'memory (RSS)':50} {'before':>9} {'storm end':>9} {'after':>9}")
    for name, part in (
        ("  bench process (aisoar stack, fakes)", "bench"),
        ("  Prefect server (+ children)", "prefect"),
    ):
        print(
            f"{name:50} {_mb(rss['before'][part]):>9} {_mb(rss['after_storm'][part]):>9} {_mb(rss['after'][part]):>9}"
        )
    print(
        f"{'  total':50} {_mb(rss['before']['total']):>9} {_mb(rss['after_storm']['total']):>9} "
        f"{_mb(rss['after']['total']):>9}   (peak {_mb(rss['peak_total'])}; the sender process not counted)"
    )


# -- main ------------------------------------------------------------------------------------


def served_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Settings given to `aisoar serve` on the command line (printed with the others)."""
    return {"ingress_processes": args.ingress_processes} if args.ingress_processes is not None else {}


BENCH_PHASES = ("burst", "sustained", "postgres", "storm-postgres")


def phases_of(args: argparse.Namespace) -> list[str]:
    chosen = ["burst", "sustained"] if args.phase == "all" else [p.strip() for p in args.phase.split(",") if p.strip()]
    unknown = set(chosen) - set(BENCH_PHASES)
    if unknown:
        raise SystemExit(f"unknown phase(s): {', '.join(sorted(unknown))}; choose from {', '.join(BENCH_PHASES)}")
    if args.postgres and "postgres" not in chosen:
        chosen.append("postgres")
    return chosen


def child_argv(args: argparse.Namespace, phase: str) -> list[str]:
    """This command for one phase, with the other options as given."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--phase", phase]
    for name, value in vars(args).items():
        if name in ("phase", "postgres") or value is False or value is None:
            continue
        argv += [f"--{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return argv


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == SENDER_FLAG:
        return storm_sender(Path(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--phase", default="all", help="burst, sustained, postgres, storm-postgres (comma separated) or all"
    )
    parser.add_argument("--postgres", action="store_true", help="also run the burst on PostgreSQL")
    parser.add_argument("--alerts", type=int, default=100, help="alerts in the burst")
    parser.add_argument("--timeout", type=float, default=180, help="seconds after the first post: not blocked")
    parser.add_argument("--warmup", type=int, default=1, help="alerts (and plain runs) before the burst")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain Prefect burst")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="the bursts against `aisoar serve` in a process of its own (as production runs it), not in "
        "the bench's process beside the stand-ins and the sender",
    )
    parser.add_argument(
        "--ingress-processes",
        type=int,
        default=None,
        help="with --serve: AISOAR_INGRESS_PROCESSES, the webhook processes beside the main one",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="with --serve, on PostgreSQL: `aisoar serve` replicas on the one store (the production "
        "shape), the burst's posts spread over them in turn as a load balancer would",
    )
    parser.add_argument("--rate", type=float, default=500, help="alerts/s in the sustained storm")
    parser.add_argument("--seconds", type=float, default=60, help="how long the storm lasts")
    parser.add_argument("--request-timeout", type=float, default=10, help="the storm sender's wait for an answer")
    parser.add_argument("--connections", type=int, default=512, help="the storm sender's connection pool")
    parser.add_argument("--drain-timeout", type=float, default=600, help="seconds to wait for the inbox's dispatch")
    args = parser.parse_args()
    phases = phases_of(args)
    if len(phases) > 1:  # each in a process of its own: its memory figures carry no earlier phase
        codes = [subprocess.run(child_argv(args, phase), check=False).returncode for phase in phases]
        return max(codes)

    work = Path(tempfile.mkdtemp(prefix="aisoar-bench-burst-"))
    client = prefect_environment(work, free_port())  # before anything imports Prefect
    bench = Bench(args, work, client)
    from prefect.settings import get_current_settings

    runner = get_current_settings().runner
    print(f"machine: {machine()}; work dir {work}")
    print(
        f"  plain Prefect serve() defaults: process_limit={runner.process_limit}, "
        f"poll_frequency={runner.poll_frequency} s"
    )
    for phase in phases:
        load = os.getloadavg()
        print(f"\n== {phase} (load average {load[0]:.1f}: other work on this machine skews the figures)")
        started, at = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if phase in ("sustained", "storm-postgres"):
            result = phase_sustained(bench, "postgres" if phase == "storm-postgres" else "sqlite")
        else:
            result = phase_burst(bench, "postgres" if phase == "postgres" else "sqlite")
        took = time.monotonic() - started
        end = os.getloadavg()
        print(f"  ({phase} took {took:.0f} s; load average at its end {end[0]:.1f} {end[1]:.1f} {end[2]:.1f})")
        result |= {"at": at, "took_s": took, "args": vars(args), "load_average": {"start": load, "end": end}}
        save(phase, result, {"process_limit": runner.process_limit, "poll_frequency": runner.poll_frequency})
    print(f"\nwritten: {OUT}")
    return 0


def save(phase: str, result: dict[str, Any], serve_defaults: dict[str, Any]) -> None:
    """The phase's figures into bench/burst.last.json, beside the other phases' latest ones."""
    try:
        report = json.loads(OUT.read_text())
    except (OSError, ValueError):
        report = {}
    phases = report.get("phases") if isinstance(report.get("phases"), dict) else {}
    phases[phase] = result
    report = {"machine": machine(), "plain_serve_defaults": serve_defaults, "phases": phases}
    OUT.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
