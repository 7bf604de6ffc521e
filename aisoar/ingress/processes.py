"""Webhooks taken by processes of their own (``AISOAR_INGRESS_PROCESSES``).

One interpreter runs one thread at a time: in a storm of 500 deliveries a second, reading,
authenticating and answering them took half of it, and every pause of the dispatch workers,
the writer or the runs showed in the senders' waits. With ``AISOAR_INGRESS_PROCESSES=N`` the
main process binds the ingress port and starts N webhook processes that accept on it
(aisoar/ingress/webhook_process.py): each reads, checks and stores the deliveries it accepts,
exactly as the main process would, and answers them. The main process no longer accepts on
the port: it dispatches, serves the rest (Slack's buttons, ``/healthz``, ``/alerts/{id}``,
``/metrics``), which the webhook processes pass on to it over a Unix socket in a private
folder, and runs the playbooks.

Each webhook process has a relay to the main process, a socket pair, one JSON object a line:
- to the main process: ``{"alerts": [ids]}``, alerts it stored, dispatched at once here (an
  alert whose line never arrives still waits in the inbox, where the upkeep finds it), and
  ``{"counts": [[source, outcome, n], ...]}`` for ``/metrics``;
- to the webhook process: ``{"full": bool}``, whether the dispatch queue is full (deliveries
  get 429 then, as from the main process).

A webhook process that ends is started again; one whose relay ends (the main process is gone)
stops taking connections, answers what it took, and ends.
"""

from __future__ import annotations

import json
import logging
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aisoar.ingress.webhooks import Count, Intake
from aisoar.store import Store

log = logging.getLogger("aisoar.ingress")

RESTART_AFTER = 1.0  # seconds before a webhook process that ended is started again
QUICK_END = 10.0  # one that ends within this of its start waits longer each time (up to MAX_WAIT)
MAX_WAIT = 30.0
STOP_SECONDS = 10.0  # a stopping webhook process has this long to answer what it took
# Blocked in the thread that starts webhook processes, so each starts with them blocked: a stop
# signalled to the whole group while one is still importing must not end it (it ignores them once
# it runs; the main process ends it through its relay).
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


@dataclass
class _Child:
    index: int
    process: subprocess.Popen[bytes]
    relay: socket.socket
    started: float
    received: bytearray = field(default_factory=bytearray)
    told_full: bool | None = None


class WebhookProcesses:
    """The webhook processes of one ``aisoar serve``: started with its dispatch workers
    (``start``), stopped before them (``stop``)."""

    def __init__(self, processes: int, listener: socket.socket, main_socket: Path, store: Store) -> None:
        self.processes = processes
        self.listener = listener
        self.main_socket = main_socket
        self.store = store
        self._children: dict[int, _Child] = {}
        self._due: dict[int, float] = {}  # webhook processes to start again, and when
        self._waits: dict[int, float] = {}
        self._selector = selectors.DefaultSelector()
        self._guard = threading.Lock()  # each ended once (by the relay or stop); none started once stopping
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._intake: Intake | None = None
        self._counted: Count | None = None

    def start(self, intake: Intake, count: Count) -> None:
        self._intake, self._counted = intake, count
        now = time.monotonic()
        self._due = {index: now for index in range(self.processes)}  # started by the relay thread
        self._thread = threading.Thread(target=self._relay, name="aisoar-webhook-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Each webhook process is told to stop (its relay ends): it answers what it took and
        ends; what it stored meanwhile is still offered here."""
        with self._guard:  # no webhook process starts again after this
            self._stopping.set()
            told = list(self._children.values())
        for child in told:
            try:
                child.relay.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(STOP_SECONDS + 2)
        for child in list(self._children.values()):
            self._end(child)

    def _spawn(self, index: int) -> None:
        ours, theirs = socket.socketpair()
        command = [
            sys.executable,
            "-m",
            "aisoar.ingress.webhook_process",
            "--listen-fd",
            str(self.listener.fileno()),
            "--relay-fd",
            str(theirs.fileno()),
            "--main-socket",
            str(self.main_socket),
        ]
        try:
            process = subprocess.Popen(command, pass_fds=(self.listener.fileno(), theirs.fileno()))
        finally:
            theirs.close()
        ours.setblocking(False)
        child = _Child(index, process, ours, time.monotonic())
        self._children[index] = child
        self._selector.register(ours, selectors.EVENT_READ, child)

    def _relay(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # inherited by what it starts
        deadline: float | None = None
        while self._children or (self._due and not self._stopping.is_set()):
            if self._stopping.is_set():
                deadline = deadline or time.monotonic() + STOP_SECONDS
                if time.monotonic() > deadline:
                    return
            ids: list[str] = []
            if not self._children:  # all ended: one starts again soon
                time.sleep(0.05)
            for key, _ in self._selector.select(timeout=0.05) if self._children else ():
                self._read(key.data, ids)
            if ids:
                self._offer(ids)
            self._tell_full()
            self._start_due()

    def _read(self, child: _Child, ids: list[str]) -> None:
        try:
            chunk = child.relay.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            child.received += chunk
            *lines, rest = child.received.split(b"\n")
            child.received = bytearray(rest)
            for line in lines:
                self._take(line, ids)
            return
        self._end(child)
        if not self._stopping.is_set():
            self._schedule_restart(child)

    def _take(self, line: bytes | bytearray, ids: list[str]) -> None:
        try:
            message = json.loads(line)
            ids.extend(str(alert_id) for alert_id in message.get("alerts", ()))
            if self._counted is not None:
                for source, outcome, amount in message.get("counts", ()):
                    self._counted(str(source), str(outcome), int(amount))
        except (ValueError, TypeError, AttributeError):
            log.error("a webhook process sent a line that is not a relay message; ignored")

    def _offer(self, ids: list[str]) -> None:
        assert self._intake is not None
        try:
            alerts = self.store.get_alerts(ids)
        except Exception as exc:  # they wait in the inbox: the upkeep queues them
            log.warning("could not read %d alerts a webhook process stored (%s); the upkeep will", len(ids), exc)
            return
        for alert in alerts:
            self._intake.offer(alert)

    def _tell_full(self) -> None:
        full = bool(self._intake is not None and self._intake.full)
        for child in list(self._children.values()):
            if child.told_full is not full:
                try:
                    child.relay.sendall(json.dumps({"full": full}).encode() + b"\n")
                    child.told_full = full
                except OSError:
                    pass  # it is ending: its relay's end is read next

    def _end(self, child: _Child) -> None:
        with self._guard:
            if self._children.get(child.index) is not child:
                return
            del self._children[child.index]
            self._selector.unregister(child.relay)
            child.relay.close()
        try:
            child.process.wait(STOP_SECONDS if self._stopping.is_set() else 2)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait(5)

    def _schedule_restart(self, child: _Child) -> None:
        lived = time.monotonic() - child.started
        wait = RESTART_AFTER if lived > QUICK_END else min(MAX_WAIT, 2 * self._waits.get(child.index, RESTART_AFTER))
        self._waits[child.index] = wait
        self._due[child.index] = time.monotonic() + wait
        log.error(
            "webhook process %d (pid %d) ended with code %s; another starts in %.0f s",
            child.index,
            child.process.pid,
            child.process.returncode,
            wait,
        )

    def _start_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self._due.items()):
            if when > now:
                continue
            with self._guard:  # not while ``stop`` tells the others to end
                if self._stopping.is_set():
                    return
                del self._due[index]
                try:
                    self._spawn(index)
                except OSError as exc:
                    log.error("could not start webhook process %d: %s", index, exc)
                    self._due[index] = now + MAX_WAIT
