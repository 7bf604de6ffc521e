"""Webhooks taken by processes of their own (``AISOAR_INGRESS_PROCESSES``): the real `aisoar
serve` with two webhook processes on the default SQLite store, a Prefect server and the
sandbox's stand-ins. What they store is dispatched by the main process (keys blocked, runs
made), what they count is in its /metrics, every other request reaches it through them; one
that dies is replaced while the port keeps its connections; they end with the main process,
however it ends."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aisoar.ingress.auth import signed_headers
from aisoar.store import Store
from cli.main import _webhook_processes
from cli.terminal import Failure
from sandbox.stack import Sandbox
from tests.conftest import PREFECT_AUTH, READ, WEBHOOK_SECRET, make_settings
from tests.replicas import Cluster, Replica, leaked_key_alert, wait_for

CONNECTORS = ("litellm", "openai", "slack", "jira")
KEYS = 24


def raw_post(port: int, path: str, body: bytes) -> bytes:
    """A POST sent as written (an HTTP client would resolve the path's dot segments first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        conn.sendall(f"{head}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def webhook_processes(replica: Replica) -> list[int]:
    """The pids of the replica's webhook processes (its children running the webhook module)."""
    assert replica.process is not None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == replica.process.pid and b"aisoar.ingress.webhook_process" in command:
            found.append(int(entry.name))
    return sorted(found)


def processes_with(argument: bytes) -> list[int]:
    """Webhook processes whose command line holds ``argument`` (their main process's socket),
    whichever process is their parent now."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if b"aisoar.ingress.webhook_process" in command and argument in command.split(b"\0"):
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def accepted(metrics_text: str, outcome: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "aisoar_alerts_total" and sample.labels == {"source": "generic", "outcome": outcome}:
                return sample.value
    return 0.0


@pytest.fixture()
def served(tmp_path: Path, sandbox: Sandbox) -> Iterator[tuple[Cluster, Replica]]:
    systems = {**sandbox.start(CONNECTORS), "AISOAR_INGRESS_PROCESSES": "2"}
    cluster = Cluster.create(None, tmp_path, PREFECT_AUTH, systems)
    main_socket = b""
    try:
        (replica,) = cluster.start(1)
        first = wait_for("a webhook process", lambda: webhook_processes(replica), 30)[0]
        main_socket = Path(f"/proc/{first}/cmdline").read_bytes().split(b"\0--main-socket\0")[1].split(b"\0")[0]
        yield cluster, replica
    finally:
        cluster.stop()
        for pid in processes_with(main_socket) if main_socket else []:  # a failed test's leftovers
            os.kill(pid, signal.SIGKILL)


def test_webhook_processes_take_a_burst_that_the_main_process_contains(
    served: tuple[Cluster, Replica], sandbox: Sandbox
) -> None:
    _, replica = served
    children = wait_for("two webhook processes", lambda: len(pids := webhook_processes(replica)) == 2 and pids, 30)
    assert "(2 webhook processes)" in replica.log.read_text()

    alerts = [leaked_key_alert(sandbox, "fanout", i) for i in range(KEYS)]
    with ThreadPoolExecutor(KEYS) as pool:  # each post its own connection: the kernel hands them out
        answers = list(pool.map(lambda pair: replica.post(pair[0]), alerts))
    assert [a.status_code for a in answers] == [202] * KEYS, [a.text for a in answers if a.status_code != 202]
    tokens = [token for _, token in alerts]
    wait_for("every key blocked", lambda: all(sandbox.litellm.keys[t]["blocked"] for t in tokens), 60, every=0.1)
    ids = [a.json()["alert_id"] for a in answers]
    statuses = [  # GET /alerts/{id}: answered by the main process, passed on by a webhook process
        wait_for(f"{i} dispatched", lambda i=i: (s := replica.alert(i))["status"] == "dispatched" and s, 60)
        for i in ids
    ]
    assert {s["incident_id"] for s in statuses} and all(s["flow_runs"] for s in statuses), statuses
    assert len({s["incident_id"] for s in statuses}) == KEYS  # one incident per key

    body = json.dumps(alerts[0][0]).encode()  # a forged signature: refused and counted
    forged = httpx.post(
        f"{replica.url}/webhooks/generic", content=body, headers=signed_headers("not-the-secret", body), timeout=10
    )
    assert forged.status_code == 401, forged.text
    extra, _ = leaked_key_alert(sandbox, "fanout-again", 0)
    delivery = json.dumps(extra).encode()
    headers = signed_headers(WEBHOOK_SECRET, delivery)  # the same delivery twice, as a sender retries it
    twice = [httpx.post(f"{replica.url}/webhooks/generic", content=delivery, headers=headers, timeout=10) for _ in "12"]
    assert [a.status_code for a in twice] == [202, 200] and twice[1].json()["status"] == "duplicate", twice[1].text

    def counted() -> str | None:  # in the webhook processes, relayed to the main process's /metrics
        text = httpx.get(f"{replica.url}/metrics", headers=READ, timeout=5).text
        expected = {"accepted": KEYS + 1, "unauthenticated": 1, "duplicate": 1}
        return text if all(accepted(text, outcome) == n for outcome, n in expected.items()) else None

    text = wait_for("the deliveries counted", counted, 10)
    assert "aisoar_dispatch_queue 0.0" in text
    assert httpx.get(f"{replica.url}/metrics", timeout=5).status_code == 401  # the main process's rules
    health = httpx.get(f"{replica.url}/healthz", timeout=5)
    assert health.json() == {"status": "ok"} and len(health.headers.get_list("date")) == 1, health.headers
    # A path the main process would read as a webhook once its dot segments are resolved: refused
    # (only the webhook processes read deliveries; the main process has no webhook route then).
    for path in ("/webhooks/../webhooks/generic", "/alerts/../webhooks/generic"):
        assert raw_post(replica.port, path, body).startswith(b"HTTP/1.1 400 "), path
    slack = httpx.post(f"{replica.url}/slack/interactivity?x=1", content=b"payload=%7B%7D", timeout=5)
    assert slack.status_code == 401 and "X-Slack-Signature" in slack.json()["error"], slack.text  # passed back
    assert webhook_processes(replica) == children


def test_a_webhook_process_that_dies_is_replaced_and_the_port_keeps_its_connections(
    served: tuple[Cluster, Replica], sandbox: Sandbox
) -> None:
    _, replica = served
    first = wait_for("two webhook processes", lambda: len(pids := webhook_processes(replica)) == 2 and pids, 30)
    for pid in first:  # both at once: nobody accepts on the port for a moment
        os.kill(pid, signal.SIGKILL)
    alert, token = leaked_key_alert(sandbox, "replaced", 0)
    answer = replica.post(alert)  # waits in the port's backlog until a new webhook process accepts it
    assert answer.status_code == 202, answer.text
    wait_for("the key blocked", lambda: sandbox.litellm.keys[token]["blocked"], 30)
    now = wait_for("two new webhook processes", lambda: len(pids := webhook_processes(replica)) == 2 and pids, 30)
    assert not set(now) & set(first)
    assert "ended with code -9; another starts in" in replica.log.read_text()


@pytest.mark.parametrize(
    ("how", "group"),
    [(signal.SIGTERM, False), (signal.SIGKILL, False), (signal.SIGTERM, True), (signal.SIGINT, True)],
    ids=["SIGTERM", "SIGKILL", "SIGTERM to the group", "Ctrl-C"],
)
def test_the_webhook_processes_end_with_the_main_process(
    served: tuple[Cluster, Replica], how: signal.Signals, group: bool
) -> None:
    """Stopped (SIGTERM; a service manager or Ctrl-C signal the whole group), the main process
    stops them: they answer what they took and end before it does, none started again; killed
    (SIGKILL) in a storm, they see its end of the relay go and end. Either way the port is free."""
    _, replica = served
    children = wait_for("two webhook processes", lambda: len(pids := webhook_processes(replica)) == 2 and pids, 30)
    assert replica.process is not None
    posting = threading.Event()

    def post_until_stopped() -> None:  # a storm under way: the relay is busy when the main process ends
        n = 0
        while not posting.is_set():
            body = json.dumps({"id": f"storm-{n}", "title": "storm", "severity": "low"}).encode()
            try:
                httpx.post(
                    f"{replica.url}/webhooks/generic",
                    content=body,
                    headers=signed_headers(WEBHOOK_SECRET, body),
                    timeout=5,
                )
            except httpx.HTTPError:
                pass
            n += 1

    senders = [threading.Thread(target=post_until_stopped) for _ in range(4)]
    for sender in senders:
        sender.start()
    time.sleep(1.5)
    if how == signal.SIGKILL:  # it dies with relay lines unread: its children see a reset, not an end
        os.kill(replica.process.pid, signal.SIGSTOP)
        time.sleep(1)  # the webhook processes go on storing and relaying meanwhile
    if group:
        os.killpg(replica.process.pid, how)
    else:
        replica.process.send_signal(how)
    try:
        replica.process.wait(30)
        wait_for("the webhook processes ended", lambda: not any(alive(pid) for pid in children), 15)
    finally:
        posting.set()
        for sender in senders:
            sender.join(10)
    assert "another starts" not in replica.log.read_text()
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as `aisoar serve` binds
        probe.bind(("127.0.0.1", replica.port))


def test_a_stop_signalled_to_the_group_while_a_webhook_process_starts_does_not_kill_it(
    served: tuple[Cluster, Replica],
) -> None:
    """A service manager's stop reaches every process of the group, a webhook process still
    importing too: it starts with the stop signals blocked, so it is not killed by one; the main
    process ends it through its relay and starts none again."""
    _, replica = served
    first = wait_for("two webhook processes", lambda: len(pids := webhook_processes(replica)) == 2 and pids, 30)
    os.kill(first[0], signal.SIGKILL)  # the main process starts another in 2 s
    started = wait_for(
        "a new webhook process", lambda: (new := set(webhook_processes(replica)) - set(first)) and new, 30, every=0.005
    )
    assert replica.process is not None
    os.killpg(replica.process.pid, signal.SIGTERM)  # within milliseconds of its start: it is still importing
    replica.process.wait(30)
    wait_for("the webhook processes ended", lambda: not any(alive(pid) for pid in {*first, *started}), 15)
    log = replica.log.read_text()
    assert "ended with code -9; another starts in" in log  # the one killed above
    assert "ended with code -15" not in log and log.count("another starts") == 1, log


def test_the_store_writers_of_several_processes_take_turns(tmp_path: Path) -> None:
    """While one process writes (holds the writers' turn), another cannot take it; once the
    transaction ends, it can at once: no waiting in SQLite's busy handler."""
    store = Store(f"sqlite:///{tmp_path / 'aisoar.db'}")
    lock_file = str(tmp_path / "aisoar.db.writers")
    probe = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    print('busy')\n"
        "else:\n    print('free')\n"
    )

    def other_process() -> str:
        return subprocess.run(
            [sys.executable, "-c", probe, lock_file], capture_output=True, text=True, check=True
        ).stdout

    with store._tx():
        assert other_process().strip() == "busy"
    assert other_process().strip() == "free"
    assert stat.filemode(os.stat(lock_file).st_mode) == "-rw-------"  # only aisoar's user


def test_a_taken_port_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """The ingress port is bound by `aisoar serve` itself when webhook processes take it: a port in
    use stops the start with the address, as uvicorn's own bind would."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(tmp_path, ingress_port=port, ingress_processes=2)
        with pytest.raises(Failure, match=rf"cannot listen on 127\.0\.0\.1:{port}: Address already in use"):
            _webhook_processes(settings, Store(settings.store_url))
