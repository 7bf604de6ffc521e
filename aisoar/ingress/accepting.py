"""Alerts into the inbox in group commits.

Each delivery's alerts must be in the store before its sender gets 202. Written one transaction
per delivery, a storm of deliveries queued on the store's one writer at a time (SQLite), each
writer thread also waiting for the interpreter between its statements: about a hundred
deliveries a second. Here one thread writes whatever deliveries arrived meanwhile in one
transaction, and each sender is answered when the transaction that holds its alerts commits.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future

from aisoar.models import Alert
from aisoar.store import Store

Accepted = list[tuple[str, bool]]  # for each alert of a delivery: its id, whether it is new
Delivery = tuple[list[tuple[Alert, str]], Future[Accepted]]  # its alerts (alert, delivery id), its answer
MAX_BATCH = 1000  # alerts in one transaction


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

    def accept(self, items: list[tuple[Alert, str]]) -> Future[Accepted]:
        """A delivery's alerts (alert, delivery id); the future is done when they are stored, or
        holds the store's error (nothing of the delivery is stored then)."""
        future: Future[Accepted] = Future()
        with self._ready:
            if self._stopped:
                future.set_exception(RuntimeError("the ingress is stopping"))
                return future
            self._waiting.append((items, future))
            if self._thread is None:  # started by the first delivery
                self._thread = threading.Thread(target=self._write, name="aisoar-inbox-writer", daemon=True)
                self._thread.start()
            self._ready.notify()
        return future

    def _write(self) -> None:
        while True:
            with self._ready:
                while not self._waiting and not self._stopped:
                    self._ready.wait()
                if not self._waiting:
                    return
                batch: list[Delivery] = []
                size = 0
                while self._waiting and (not batch or size + len(self._waiting[0][0]) <= MAX_BATCH):
                    batch.append(self._waiting.popleft())
                    size += len(batch[-1][0])
            self._commit(batch)

    def _commit(self, batch: list[Delivery]) -> None:
        try:
            results = self.store.accept_alerts([item for items, _ in batch for item in items])
        except Exception as exc:
            if len(batch) > 1:  # one delivery's failure must not fail the others: each on its own
                for one in batch:
                    self._commit([one])
                return
            batch[0][1].set_exception(exc)
            return
        start = 0
        for items, future in batch:
            future.set_result(results[start : start + len(items)])
            start += len(items)
