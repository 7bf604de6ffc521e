"""Alerts into the inbox in group commits.

Each delivery's alerts must be in the store before its sender gets 202. Written one transaction
per delivery, a storm of deliveries queued on the store's one writer at a time (SQLite), each
writer thread also waiting for the interpreter between its statements: about a hundred
deliveries a second. Here one thread writes whatever deliveries arrived meanwhile in one
transaction, and each sender is answered when the transaction that holds its alerts commits.

The webhook awaits ``accept_async``: the answers of one transaction reach the event loop in one
call, not one thread-safe future per delivery (each cost the event loop a lock and a wake-up).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

from aisoar.models import Alert
from aisoar.store import Store

Accepted = list[tuple[str, bool]]  # for each alert of a delivery: its id, whether it is new
Items = list[tuple[Alert, str]]  # a delivery's alerts (alert, delivery id)
MAX_BATCH = 1000  # alerts in one transaction
LINGER_SECONDS = 0.002  # the writer waits this long for more deliveries before a small batch
LINGER_UNTIL = 16  # deliveries: a batch this large is written at once


@dataclass(frozen=True, slots=True)
class _OnLoop:
    """The answer to a delivery awaited on an event loop."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Accepted]


Answer = Future[Accepted] | _OnLoop
Delivery = tuple[Items, Answer]
Outcome = Accepted | BaseException


class InboxWriter:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: deque[Delivery] = deque()
        self._ready = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def stop(self, timeout: float = 10.0) -> None:
        """Write what was handed over, then stop."""
        with self._ready:
            self._stopped = True
            self._ready.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def accept(self, items: Items) -> Future[Accepted]:
        """A delivery's alerts (alert, delivery id); the future is done when they are stored, or
        holds the store's error (nothing of the delivery is stored then)."""
        future: Future[Accepted] = Future()
        if not self._hand_over(items, future):
            future.set_exception(RuntimeError("the ingress is stopping"))
        return future

    async def accept_async(self, items: Items) -> Accepted:
        """``accept`` for a caller on an event loop: the delivery's (alert id, new) once stored."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Accepted] = loop.create_future()
        if not self._hand_over(items, _OnLoop(loop, future)):
            raise RuntimeError("the ingress is stopping")
        return await future

    def _hand_over(self, items: Items, answer: Answer) -> bool:
        with self._ready:
            if self._stopped:
                return False
            self._waiting.append((items, answer))
            if self._thread is None:  # started by the first delivery
                self._thread = threading.Thread(target=self._write, name="aisoar-inbox-writer", daemon=True)
                self._thread.start()
            self._ready.notify()
        return True

    def _write(self) -> None:
        while True:
            with self._ready:
                while not self._waiting and not self._stopped:
                    self._ready.wait()
                if not self._waiting:
                    return
                # A moment for more to arrive: in a storm each commit costs the process more
                # (the commit, and the interpreter handed back and forth) than the wait costs.
                until = time.monotonic() + LINGER_SECONDS
                while len(self._waiting) < LINGER_UNTIL and not self._stopped:
                    if (left := until - time.monotonic()) <= 0:
                        break
                    self._ready.wait(left)
                batch: list[Delivery] = []
                size = 0
                while self._waiting and (not batch or size + len(self._waiting[0][0]) <= MAX_BATCH):
                    batch.append(self._waiting.popleft())
                    size += len(batch[-1][0])
            _settle(self._commit(batch))

    def _commit(self, batch: list[Delivery]) -> list[tuple[Answer, Outcome]]:
        try:
            results = self.store.accept_alerts([item for items, _ in batch for item in items])
        except Exception as exc:
            if len(batch) > 1:  # one delivery's failure must not fail the others: each on its own
                return [settled for one in batch for settled in self._commit([one])]
            return [(batch[0][1], exc)]
        settled: list[tuple[Answer, Outcome]] = []
        start = 0
        for items, answer in batch:
            settled.append((answer, results[start : start + len(items)]))
            start += len(items)
        return settled


def _settle(answers: list[tuple[Answer, Outcome]]) -> None:
    """Each answer given; those awaited on an event loop in one call to that loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Accepted], Outcome]]] = {}
    for answer, outcome in answers:
        if isinstance(answer, _OnLoop):
            by_loop.setdefault(answer.loop, []).append((answer.future, outcome))
        elif isinstance(outcome, BaseException):
            answer.set_exception(outcome)
        else:
            answer.set_result(outcome)
    for loop, pending in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, pending)
        except RuntimeError:  # the loop is closed: nobody waits for these answers any more
            pass


def _resolve(pending: list[tuple[asyncio.Future[Accepted], Outcome]]) -> None:
    for future, outcome in pending:
        if future.done():  # the sender went away (the request was cancelled)
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
