"""Recovery, measured on real servers on loopback: alerts taken while Prefect is down are
contained by the head start, wait in the inbox and their runs start within seconds of its
return; a replica killed mid-flight and started again under its name finishes its own work at
once (not after the stale timeout); `aisoar up` stopped with SIGTERM leaves no Prefect server
behind; a full dispatch queue answers 429 and loses nothing it accepted; /metrics shows the
inbox and the queue."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from aisoar.ingress.app import create_app
from aisoar.ingress.auth import signed_headers
from aisoar.ingress.dispatch import Dispatcher
from aisoar.specs import load_specs
from aisoar.store import Store
from aisoar.store.schema import inbox, playbook_runs
from cli.prefect_auth import basic_auth
from cli.prefect_server import PrefectServer, is_healthy
from flows.replica_id import ReplicaIdInUse, ReplicaIdLease
from sandbox.serving import free_port
from sandbox.stack import Sandbox
from tasks import catalog
from tests.conftest import PREFECT_AUTH, READ, SANDBOX_APPROVERS, WEBHOOK_SECRET, make_settings
from tests.faults import Fault, FaultProxy, fault_proxy
from tests.hostile import Recorder
from tests.replicas import AISOAR, Cluster, leaked_key_alert, wait_for

pytestmark = pytest.mark.e2e
CONNECTORS = ("litellm", "openai", "slack", "jira")
PLAYBOOK = "leaked-llm-api-key"
BACK_WITHIN = 5.0  # seconds: from Prefect (or the replica) answering again to the run (or the key blocked)


def blocked(sandbox: Sandbox, tokens: list[str]) -> bool:
    return all(sandbox.litellm.keys[token]["blocked"] for token in tokens)


def start_again(server: PrefectServer) -> tuple[float, float]:
    """Start the stopped Prefect server again (same port, same data); when its /health first
    answered (monotonic, wall clock), watched every 20 ms while it starts."""
    healthy_at: list[tuple[float, float]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if is_healthy(server.api_url, timeout=0.5):
                healthy_at.append((time.monotonic(), time.time()))
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        server.start()
    finally:
        done.set()
        watcher.join(timeout=5)
    return healthy_at[0] if healthy_at else (time.monotonic(), time.time())


def prefect_runs(cluster: Cluster) -> list[dict[str, Any]]:
    answer = httpx.post(
        f"{cluster.prefect.api_url}/flow_runs/filter",
        json={"limit": 200},
        headers=basic_auth(PREFECT_AUTH),
        timeout=30,
    )
    answer.raise_for_status()
    runs: list[dict[str, Any]] = answer.json()
    return runs


def timeline(cluster: Cluster, sandbox: Sandbox, since: float) -> str:
    """When (seconds after ``since``, wall clock) each run was created and started, and each
    request reached the gateway: where the time went."""
    events = []
    for run in prefect_runs(cluster):
        for label, stamp in (("created", run["created"]), ("started", run["start_time"])):
            if stamp:
                events.append((datetime.fromisoformat(stamp).timestamp(), f"run {run['name']} {label}"))
    for request in sandbox.litellm.requests:
        events.append((float(request["t"]), f"gateway {request['method']} {request['path']}"))
    return "; ".join(f"+{at - since:.2f} s {what}" for at, what in sorted(events) if at >= since - 1)


def flow_runs_by_incident(cluster: Cluster) -> Counter[str]:
    return Counter(str(run["parameters"]["incident_id"]) for run in prefect_runs(cluster))


@pytest.fixture()
def clusters(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Cluster]]:
    """Makes a cluster on the default SQLite store with its own Prefect server on SQLite, its
    replicas given ``settings`` (the sandbox's, and others); stops it at the end."""
    made: list[Cluster] = []

    def make(settings: dict[str, str]) -> Cluster:
        cluster = Cluster.create(None, tmp_path / f"cluster-{len(made)}", PREFECT_AUTH, settings)
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.stop()


# -- 1. Prefect outage --------------------------------------------------------------------


def test_while_prefect_is_down_the_key_is_blocked_and_the_run_starts_within_seconds_of_its_return(
    clusters: Callable[[dict[str, str]], Cluster], sandbox: Sandbox
) -> None:
    """The head start does not need Prefect: the key is blocked (and verified) during the outage;
    the alert stays pending, saying why, until its run exists; the run then records the blocked
    key as a task run of its own and carries on (tells on-call, waits for the approval)."""
    cluster = clusters(sandbox.start(CONNECTORS))
    (replica,) = cluster.start(1)
    assert replica.health() == {"status": "ok"}

    cluster.prefect.stop()
    wait_for("/healthz says Prefect is down", lambda: replica.health()["status"] == "degraded", 10)
    health = replica.health()
    assert health["status"] == "degraded", health
    assert any("Prefect" in problem for problem in health["problems"]), health

    alert, token = leaked_key_alert(sandbox, "outage", 0)
    posted_at = time.monotonic()
    answer = replica.post(alert)
    assert answer.status_code == 202, answer.text
    alert_id = answer.json()["alert_id"]
    wait_for("the key blocked while Prefect is down", lambda: blocked(sandbox, [token]), 30, every=0.02)
    print(f"\nPrefect down: key blocked at the gateway {time.monotonic() - posted_at:.2f} s after the post")
    wait_for("the alert says why it waits", lambda: replica.alert(alert_id)["error"], 10)
    time.sleep(1.5)  # several upkeep rounds: still no run can start
    status = replica.alert(alert_id)
    assert status["status"] == "pending", status
    assert "wait" in status["error"] and "Prefect" in status["error"], status
    assert status["incident_id"] and status["flow_runs"] == {}, status
    assert sandbox.slack.messages == [], "nobody can be told before the run: the announcement is its step"
    block_requests = [r for r in sandbox.litellm.requests if r["path"] == "/key/block"]
    assert len(block_requests) == 1, block_requests  # the alert's retried launches did not block it again

    healthy_at, healthy_wall = start_again(cluster.prefect)
    status = wait_for(
        "the alert's run created", lambda: (s := replica.alert(alert_id))["status"] == "dispatched" and s, 30, 0.02
    )
    outage_to_run = time.monotonic() - healthy_at
    print(f"Prefect healthy again -> the alert's run created: {outage_to_run:.2f} s")
    print(f"after Prefect answered: {timeline(cluster, sandbox, healthy_wall)}")
    assert status["flow_runs"].keys() == {PLAYBOOK} and status["error"] is None, status
    run_id = status["flow_runs"][PLAYBOOK]
    wait_for("the run waiting for approval", lambda: run_state(cluster, run_id) == "PAUSED", 60, every=0.1)
    steps = task_runs_of(cluster, run_id)
    block = steps["block-key-at-gateway"]["state"]
    assert block["type"] == "COMPLETED" and block["name"] == "Done", block
    assert "before this run was created" in block["message"], block
    assert steps["block-key-at-gateway.verify"]["state"]["name"] == "Verified", steps["block-key-at-gateway.verify"]
    assert "notify-oncall" in steps, sorted(steps)  # told on-call once it could
    assert len([r for r in sandbox.litellm.requests if r["path"] == "/key/block"]) == 1  # not blocked twice
    wait_for("/healthz ok again", lambda: replica.health() == {"status": "ok"}, 5)
    assert flow_runs_by_incident(cluster) == Counter({status["incident_id"]: 1})
    assert outage_to_run <= BACK_WITHIN, f"{outage_to_run:.2f} s from Prefect's return to the run"


def run_state(cluster: Cluster, run_id: str) -> str | None:
    answer = httpx.get(f"{cluster.prefect.api_url}/flow_runs/{run_id}", headers=basic_auth(PREFECT_AUTH), timeout=30)
    answer.raise_for_status()
    state = answer.json()["state"]
    return str(state["type"]) if state else None


def task_runs_of(cluster: Cluster, run_id: str) -> dict[str, dict[str, Any]]:
    """The run's task runs by name, once their events reached the server (final states)."""

    def final() -> dict[str, dict[str, Any]] | None:
        answer = httpx.post(
            f"{cluster.prefect.api_url}/task_runs/filter",
            json={"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200},
            headers=basic_auth(PREFECT_AUTH),
            timeout=30,
        )
        answer.raise_for_status()
        runs = {r["name"]: r for r in answer.json()}
        names = ("block-key-at-gateway", "block-key-at-gateway.verify", "notify-oncall")
        done = all(n in runs and runs[n]["state"] and runs[n]["state"]["type"] != "RUNNING" for n in names)
        return runs if done else None

    return wait_for("the run's task runs on the server", final, 60, every=0.2)


# -- 2. a replica killed and started again under its name ----------------------------------

STALE = 60.0  # runner_stale_seconds here: only a replica taking back its own work finishes it in seconds


@pytest.fixture()
def stalled(sandbox: Sandbox) -> Iterator[tuple[dict[str, str], FaultProxy]]:
    """The sandbox's settings with the LLM gateway behind a fault proxy that answers every
    ``POST /key/block`` 503 until ``proxy.script()`` clears it: a run that reaches the block is
    mid-step (retrying) for as long as the test wants; runner_stale_seconds is ``STALE``."""
    env = sandbox.start(CONNECTORS)
    with fault_proxy(env["AISOAR_LITELLM_URL"]) as (gateway, url):
        gateway.script(*[Fault(status=503)] * 10_000, match=r"^POST /key/block")
        yield {**env, "AISOAR_LITELLM_URL": url, "AISOAR_RUNNER_STALE_SECONDS": str(STALE)}, gateway


def runs_held(cluster: Cluster, owner: str | None) -> int:
    """Unfinished runs held by ``owner`` (None: by nobody) in the store."""
    holder = playbook_runs.c.owner.is_(None) if owner is None else playbook_runs.c.owner == owner
    with Store(cluster.store_url).engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).where(holder, playbook_runs.c.finished.is_(False))).scalar()
    return int(count or 0)


def test_a_replica_killed_mid_flight_takes_its_work_back_when_started_again(
    clusters: Callable[[dict[str, str]], Cluster], sandbox: Sandbox, stalled: tuple[dict[str, str], FaultProxy]
) -> None:
    env, gateway = stalled
    cluster = clusters(env)
    (replica,) = cluster.start(1)

    mid_flight = [leaked_key_alert(sandbox, "midflight", i) for i in range(3)]
    just_taken = [leaked_key_alert(sandbox, "justtaken", i) for i in range(6)]
    accepted = []
    for alert, _ in mid_flight:
        answer = replica.post(alert)
        assert answer.status_code == 202, answer.text
        accepted.append(answer.json()["alert_id"])
    wait_for(
        "every mid-flight run trying to block its key",
        lambda: len({seen.body for seen in gateway.matching()}) >= len(mid_flight),
        60,
    )
    with ThreadPoolExecutor(max_workers=len(just_taken)) as senders:
        answers = list(senders.map(lambda item: replica.post(item[0]), just_taken))
    replica.kill()  # SIGKILL just after the last 202: alerts mid-dispatch, runs mid-step
    killed_at = time.monotonic()
    assert [a.status_code for a in answers] == [202] * len(just_taken), [a.text for a in answers]
    accepted += [a.json()["alert_id"] for a in answers]

    with Store(cluster.store_url).engine.connect() as conn:
        pending = conn.execute(
            sa.select(sa.func.count()).where(inbox.c.id.in_(accepted), inbox.c.status == "pending")
        ).scalar()
    held = runs_held(cluster, replica.name)
    print(f"\nat the kill: {pending} accepted alert(s) pending, {held} run(s) held by {replica.name}")
    assert held >= len(mid_flight)
    tokens = [token for _, token in mid_flight + just_taken]
    assert not any(sandbox.litellm.keys[token]["blocked"] for token in tokens)

    gateway.script()  # the gateway answers again
    spawned_at = time.monotonic()
    healthy_at = cluster.restart(replica)
    wait_for("every key blocked by the restarted replica", lambda: blocked(sandbox, tokens), 90, every=0.02)
    done_at = time.monotonic()
    print(
        f"restarted {replica.name}: /healthz after {healthy_at - spawned_at:.2f} s; every key blocked "
        f"{done_at - healthy_at:.2f} s after /healthz answered ({done_at - spawned_at:.2f} s after the "
        f"start, {done_at - killed_at:.2f} s after the kill; runner_stale_seconds {STALE:.0f})"
    )

    def all_dispatched() -> bool:
        return all(replica.alert(alert_id)["status"] == "dispatched" for alert_id in accepted)

    wait_for("every accepted alert dispatched", all_dispatched, 30, every=0.2)
    incidents = {replica.alert(alert_id)["incident_id"] for alert_id in accepted}
    assert len(incidents) == len(accepted)
    runs = flow_runs_by_incident(cluster)
    assert set(runs) == incidents and set(runs.values()) == {1}, runs  # nothing started twice
    assert done_at - healthy_at <= BACK_WITHIN < STALE, f"{done_at - healthy_at:.2f} s after /healthz"


def test_aisoar_serve_stopped_with_sigterm_lets_go_of_its_runs_for_another_replica(
    clusters: Callable[[dict[str, str]], Cluster], sandbox: Sandbox, stalled: tuple[dict[str, str], FaultProxy]
) -> None:
    """deployments/README.md: `aisoar serve` exits on SIGTERM after releasing its runs, and a run
    that was mid-step is taken over by another runtime (at once: not after runner_stale_seconds)."""
    env, gateway = stalled
    cluster = clusters(env)
    (first,) = cluster.start(1)
    alert, token = leaked_key_alert(sandbox, "sigterm", 0)
    answer = first.post(alert)
    assert answer.status_code == 202, answer.text
    wait_for("the run trying to block the key", gateway.matching, 60)
    assert runs_held(cluster, first.name) == 1

    assert first.process is not None
    first.process.send_signal(signal.SIGTERM)
    code = first.process.wait(timeout=60)
    assert code == 128 + signal.SIGTERM, f"exit code {code}:\n{first.log.read_text()[-3000:]}"
    assert "Traceback" not in first.log.read_text(), first.log.read_text()[-3000:]
    assert runs_held(cluster, first.name) == 0 and runs_held(cluster, None) == 1

    gateway.script()
    (second,) = cluster.start(1)  # another name: it holds nothing of its own
    healthy_at = time.monotonic()
    wait_for("the key blocked by the other replica", lambda: blocked(sandbox, [token]), 90, every=0.02)
    taken_after = time.monotonic() - healthy_at
    print(
        f"\n{second.name} answered /healthz; the run {first.name} let go of blocked the key {taken_after:.2f} s later"
    )
    assert flow_runs_by_incident(cluster).total() == 1  # taken over, not started again
    assert taken_after <= BACK_WITHIN < STALE


def test_a_second_process_under_a_live_replicas_id_is_refused_and_the_id_freed_on_sigterm(
    clusters: Callable[[dict[str, str]], Cluster], sandbox: Sandbox
) -> None:
    """Two live processes under one AISOAR_REPLICA_ID would each take the other's runs as their
    own: the second `aisoar serve` is refused before it takes anything (exit 2, saying which
    process holds the id), the first goes on, and its SIGTERM frees the id for the next start."""
    cluster = clusters(sandbox.start(CONNECTORS))
    (first,) = cluster.start(1)
    twin = cluster.start_twin(first)
    assert twin.process is not None
    code = twin.process.wait(timeout=120)
    log = twin.log.read_text()
    assert code == 2, f"exit code {code}:\n{log[-3000:]}"
    assert f"another process runs as replica '{first.name}'" in log and "AISOAR_REPLICA_ID" in log, log[-3000:]
    assert first.process is not None and f"pid {first.process.pid}" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]

    assert first.alive and httpx.get(f"{first.url}/healthz", timeout=5).status_code == 200
    alert, token = leaked_key_alert(sandbox, "twin", 0)
    assert first.post(alert).status_code == 202
    wait_for("the key blocked by the replica that holds the id", lambda: blocked(sandbox, [token]), 60, every=0.05)

    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(timeout=60) == 128 + signal.SIGTERM
    assert Store(cluster.store_url).replica_holder(first.name) is None  # freed: a start need not wait


def test_a_replica_id_is_held_by_one_process_at_a_time(store: Store) -> None:
    """The store's side: held once, beaten only by its holder, taken over by compare-and-set
    from the holder a start saw (two starts that saw one holder: one wins), freed by its holder."""
    assert store.replica_holder("replica-a") is None
    assert store.hold_replica_id("replica-a", "host:1:aa", replacing=None)
    assert not store.hold_replica_id("replica-a", "host:2:bb", replacing=None)  # held already
    assert store.beat_replica_id("replica-a", "host:1:aa")
    assert not store.beat_replica_id("replica-a", "host:2:bb")
    holder = store.replica_holder("replica-a")
    assert holder is not None and holder.instance == "host:1:aa"
    assert holder.heartbeat_at >= holder.started_at
    assert store.hold_replica_id("replica-a", "host:2:bb", replacing="host:1:aa")  # taken over
    assert not store.hold_replica_id("replica-a", "host:3:cc", replacing="host:1:aa")  # the other start lost
    assert not store.beat_replica_id("replica-a", "host:1:aa")  # the old holder learns it
    store.release_replica_id("replica-a", "host:1:aa")  # not its holder: nothing happens
    assert store.replica_holder("replica-a") is not None
    store.release_replica_id("replica-a", "host:2:bb")
    assert store.replica_holder("replica-a") is None


def test_a_start_under_a_beating_id_is_refused_and_one_under_a_silent_id_takes_it_over(store: Store) -> None:
    """The start's watch: the holder's own heartbeats advancing mean it is alive (whatever the
    machines' clocks say); none for the silent time mean it stopped, and the id is taken over."""
    first = ReplicaIdLease(store, "replica-a")
    first.hold()
    beating = threading.Event()
    beating.set()

    def beat() -> None:
        while beating.is_set():
            first.beat()
            time.sleep(0.1)

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        with pytest.raises(ReplicaIdInUse, match=rf"replica 'replica-a' \(host .+, pid {os.getpid()},"):
            ReplicaIdLease(store, "replica-a").hold(silent=2.0)
    finally:
        beating.clear()
        beater.join(timeout=5)
    second = ReplicaIdLease(store, "replica-a")
    started = time.monotonic()
    second.hold(silent=0.5)  # the first stopped beating (killed): taken over after the watch
    assert 0.5 <= time.monotonic() - started < 5
    holder = store.replica_holder("replica-a")
    assert holder is not None and holder.instance == second.instance
    assert not store.beat_replica_id("replica-a", first.instance)  # the first, were it alive, learns it
    second.release()
    started = time.monotonic()
    ReplicaIdLease(store, "replica-a").hold(silent=5.0)  # freed by a clean stop: held at once
    assert time.monotonic() - started < 1


# -- 3. `aisoar up` stopped as systemd or a container runtime stops it -----------------------


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    stack = [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    stack.append(child)
    return found


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_aisoar_up_stopped_with_sigterm_leaves_no_prefect_server_and_starts_again(tmp_path: Path) -> None:
    prefect_port, ingress_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISOAR_", "PREFECT_"))}
    env |= {
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(tmp_path / "prefect-client"),
        "AISOAR_DATA_DIR": str(tmp_path / "data"),
        "AISOAR_INGRESS_PORT": str(ingress_port),
        "AISOAR_WEBHOOK_SECRETS__generic": WEBHOOK_SECRET,
        "AISOAR_APPROVERS_FILE": str(SANDBOX_APPROVERS),  # no approvers.yaml in the project here
    }
    for attempt in (1, 2):
        log = tmp_path / f"up-{attempt}.log"
        with log.open("wb") as out:
            up = subprocess.Popen(
                [AISOAR, "up", "--no-sandbox", "--prefect-port", str(prefect_port)],
                cwd=tmp_path,  # no .env is read
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:

            def healthy(up: subprocess.Popen[bytes] = up, log: Path = log) -> bool:
                assert up.poll() is None, f"aisoar up exited with {up.returncode}:\n{log.read_text()[-3000:]}"
                return httpx.get(f"http://127.0.0.1:{ingress_port}/healthz", timeout=2).status_code == 200

            wait_for(f"aisoar up (start {attempt}) answers /healthz", healthy, 120, every=0.2)
            spawned = _descendants(up.pid)
            servers = [pid for pid in spawned if "prefect\0server\0start" in Path(f"/proc/{pid}/cmdline").read_text()]
            assert servers, f"no Prefect server among the children of aisoar up: {spawned}"

            sent_at = time.monotonic()
            up.send_signal(signal.SIGTERM)  # what systemd and container runtimes send
            code = up.wait(timeout=60)
            print(f"\naisoar up (start {attempt}) exited {code} {time.monotonic() - sent_at:.1f} s after SIGTERM")
        finally:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait(10)
        text = log.read_text()
        assert code == 128 + signal.SIGTERM, f"exit code {code}:\n{text[-3000:]}"
        assert "Traceback" not in text, text[-3000:]
        left = sorted(pid for pid in spawned if _alive(pid))
        assert not left, f"processes of aisoar up still running after it exited: {left}"
        assert _port_free(prefect_port), "the Prefect server's port is still taken"
        assert _port_free(ingress_port), "the ingress's port is still taken"


# -- 4, 5. the dispatch queue's back-pressure and the metrics that show it --------------------


class HeldLauncher(Recorder):
    """Records launches like ``Recorder``, but each waits until ``release`` is set (a Prefect
    that is slow to create runs); ``entered`` is set when the first launch is waiting."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.entered = threading.Event()
        self.release = threading.Event()

    def launch(self, incident_id: str, playbook: str) -> str:
        self.entered.set()
        assert self.release.wait(30), "the test never released the launcher"
        return super().launch(incident_id, playbook)


@pytest.fixture()
def held(tmp_path: Path) -> Iterator[tuple[TestClient, Store, HeldLauncher]]:
    """The ingress in this process with one dispatch worker and room for two alerts in its queue."""
    settings = make_settings(tmp_path / "data", dispatch_workers=1, dispatch_queue=2)
    store = Store(settings.store_url)
    specs = [item.spec for item in load_specs(settings.specs_dir, catalog())]
    launcher = HeldLauncher(store)
    dispatcher = Dispatcher(store, specs, launcher, timedelta(hours=1))
    with TestClient(create_app(settings, store, dispatcher)) as client:
        try:
            yield client, store, launcher
        finally:
            launcher.release.set()  # else the pool's stop waits for the worker


def _alert(index: int) -> bytes:
    secret = f"sk-proj-QUEUE{index:05d}" + "x" * 32
    entity = {"type": "llm_api_key", "provider": "openai", "secret": secret}
    alert = {"id": f"queue-{index}", "title": f"leaked key {index}", "severity": "high", "incident_type": "api_abuse"}
    return json.dumps({**alert, "entities": [entity]}).encode()


def _post(client: TestClient, body: bytes) -> Any:
    return client.post("/webhooks/generic", content=body, headers=signed_headers(WEBHOOK_SECRET, body))


def _stored(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar() or 0)


def _metrics(client: TestClient) -> dict[str, float]:
    answer = client.get("/metrics", headers=READ)
    assert answer.status_code == 200, answer.text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if not sample.labels
    }


def _all_dispatched(client: TestClient, alert_ids: list[str]) -> bool:
    statuses = [client.get(f"/alerts/{alert_id}", headers=READ).json() for alert_id in alert_ids]
    return all(s["status"] == "dispatched" and s["flow_runs"].keys() == {PLAYBOOK} for s in statuses)


def test_a_full_dispatch_queue_answers_429_stores_nothing_and_loses_nothing_accepted(
    held: tuple[TestClient, Store, HeldLauncher],
) -> None:
    client, store, launcher = held
    first = _post(client, _alert(0))
    assert first.status_code == 202, first.text
    accepted = [first.json()["alert_id"]]
    assert launcher.entered.wait(10), "the dispatch worker never reached the launcher"
    for index in (1, 2):  # the worker is busy: these fill the queue
        answer = _post(client, _alert(index))
        assert answer.status_code == 202, answer.text
        accepted.append(answer.json()["alert_id"])
    health = client.get("/healthz").json()
    assert health["status"] == "degraded" and any("queue is full" in p for p in health["problems"]), health

    before = _stored(store)
    refused = _post(client, _alert(3))
    assert refused.status_code == 429, refused.text
    assert float(refused.headers["Retry-After"]) > 0
    assert "nothing was stored" in refused.json()["error"]
    assert _stored(store) == before == len(accepted)  # not stored: a retry is a new alert, not a duplicate

    launcher.release.set()
    wait_for("every accepted alert dispatched", lambda: _all_dispatched(client, accepted), 15)
    retried = _post(client, _alert(3))  # the sender's retry, after Retry-After
    assert retried.status_code == 202, retried.text
    accepted.append(retried.json()["alert_id"])
    wait_for("the retried alert dispatched", lambda: _all_dispatched(client, accepted), 15)
    assert _stored(store) == len(accepted) == len(set(accepted)) == 4
    assert store.pending_count() == 0
    assert len(launcher.launched) == len(set(launcher.launched)) == 4  # one launch per alert, none lost, none twice
    assert client.get("/healthz").json() == {"status": "ok"}


def test_metrics_show_the_alerts_pending_and_the_dispatch_queue(held: tuple[TestClient, Store, HeldLauncher]) -> None:
    client, _, launcher = held
    assert {"aisoar_alerts_pending", "aisoar_dispatch_queue"} <= _metrics(client).keys()
    accepted = []
    for index in range(3):
        answer = _post(client, _alert(index))
        assert answer.status_code == 202, answer.text
        accepted.append(answer.json()["alert_id"])
        if index == 0:
            assert launcher.entered.wait(10)
    metrics = _metrics(client)
    assert metrics["aisoar_alerts_pending"] == 3 and metrics["aisoar_dispatch_queue"] == 2, metrics
    launcher.release.set()
    wait_for("every accepted alert dispatched", lambda: _all_dispatched(client, accepted), 15)
    metrics = _metrics(client)
    assert metrics["aisoar_alerts_pending"] == 0 and metrics["aisoar_dispatch_queue"] == 0, metrics


class SlowLauncher(Recorder):
    """Records launches like ``Recorder``; each takes longer than the upkeep's second (a busy
    Prefect), so the upkeep looks at the inbox while the alerts are being dispatched."""

    def launch(self, incident_id: str, playbook: str) -> str:
        time.sleep(2.5)
        return super().launch(incident_id, playbook)


def test_an_alert_being_dispatched_is_not_dispatched_again_by_another_worker(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", dispatch_workers=4)
    store = Store(settings.store_url)
    specs = [item.spec for item in load_specs(settings.specs_dir, catalog())]
    launcher = SlowLauncher(store)
    dispatcher = Dispatcher(store, specs, launcher, timedelta(hours=1))
    with TestClient(create_app(settings, store, dispatcher)) as client:
        alert_ids = [_post(client, _alert(100 + i)).json()["alert_id"] for i in range(2)]
        wait_for("both alerts dispatched", lambda: _all_dispatched(client, alert_ids) or None, 30)
        time.sleep(1.5)  # an upkeep more: nothing is queued again
    assert len(launcher.launched) == 2, launcher.launched  # one launch per alert, never two at once
    for alert_id in alert_ids:
        incident = store.get_incident(str(store.alert_incident(alert_id)))
        assert [e.message for e in incident.timeline].count(f"playbook {PLAYBOOK} selected") == 1
        assert sum(e.message.startswith(f"alert {alert_id} from") for e in incident.timeline) == 1
