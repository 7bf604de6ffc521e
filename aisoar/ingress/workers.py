"""The ingress's dispatch workers and its upkeep.

Accepted alerts go on a bounded queue that several worker threads take from, so a burst of
alerts is dispatched (and its runs created) concurrently, not one after the other. Alerts wait
in groups, one per fingerprint (``DispatchPool``): a storm's alerts then join their incident a
group at a time, in one transaction (``Dispatcher.dispatch_together``). The queue is bounded:
when it is full the ingress answers 429 with Retry-After before storing anything, and an alert
stored but not queued waits in the inbox, where the upkeep finds it.

The upkeep, once a second: renews this dispatcher's leases on the alerts it is working on,
queues again the alerts that wait (a failed launch, a dispatcher that stopped, a restart),
starts runs selected but never created, and keeps as evidence the alerts that joined an
incident after its run preserved the first ones (a storm).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from aisoar.evidence import EvidenceStore
from aisoar.ingress.dispatch import Dispatcher
from aisoar.models import Alert, utcnow

log = logging.getLogger("aisoar.dispatch")

UPKEEP_SECONDS = 1.0
QUEUE_GRACE = timedelta(seconds=2)  # an unheld pending alert younger than this is still on its way
EVIDENCE_DELAY = timedelta(seconds=5)
BATCH = 256  # alerts a worker takes from the queue at once
# A group dispatched again this soon after its last dispatch (a storm) waits out the rest: its
# alerts join in fewer, larger transactions, and its first alert's checks (is the run still
# going? one read of Prefect) are made a few times a second, not for every handful of alerts.
STORM_PACE = 0.25  # seconds
UNLAUNCHED_EVERY = 30  # upkeeps  # the incident's run preserves the first alerts itself


class DispatchPool:
    """Accepted alerts wait in groups, one per fingerprint (a resolved notice alone), in the
    order their groups were started; a worker takes a whole group (up to ``BATCH``). A storm is
    then one group that grows while a worker dispatches the last one, and a new fingerprint's
    first alert waits behind other groups, never behind a storm's thousands of alerts. One
    worker at a time works on a group: the alerts that come meanwhile wait for it."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        workers: int,
        capacity: int,
        observe: Callable[[Alert], None] = lambda alert: None,
        evidence: EvidenceStore | None = None,
        ready: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.dispatcher = dispatcher
        self.capacity = capacity
        self.observe = observe
        self.evidence = evidence
        self.ready = ready  # why runs cannot be started now (Prefect unreachable), or None
        self._groups: queue.Queue[str | None] = queue.Queue()  # groups to take, in order; None: stop
        self._waiting: dict[str, list[Alert]] = {}
        self._busy: set[str] = set()  # groups a worker is dispatching
        self._last_done: dict[str, float] = {}  # when each group's last dispatch ended (monotonic)
        self._queued: set[str] = set()  # alert ids waiting or being dispatched here
        self._taken = 0  # of those, being dispatched now (not counted against the capacity)
        self._guard = threading.Lock()
        self._upkeeps = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"aisoar-dispatch-{i}", daemon=True) for i in range(workers)
        ]
        self._threads.append(threading.Thread(target=self._upkeep, name="aisoar-dispatch-upkeep", daemon=True))
        # Leases renewed by a thread of their own: slow upkeep work must not let them go stale.
        self._threads.append(threading.Thread(target=self._renew, name="aisoar-dispatch-leases", daemon=True))
        self._workers = workers
        self._creators: ThreadPoolExecutor | None = None
        self._deadline: float | None = None

    def start(self) -> DispatchPool:
        # The runs' creation on threads of their own: a worker contains the next alert while
        # the last one's run waits to be created (after the burst's head starts).
        self._creators = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="aisoar-create")
        self.dispatcher.defer = self._creators.submit
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work, finishing what is queued within ``timeout``; whatever is left stays
        pending in the inbox for the next start (or another replica)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        self._deadline = deadline  # past it, workers leave what is still queued in the inbox
        for _ in range(self._workers):  # one end mark per worker, after the queued groups
            self._groups.put(None)
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        if self._creators is not None:
            # Creations not begun are dropped: their alerts, still held here, are let go at the
            # next start (or taken over by a replica) and dispatched again; the head starts'
            # steps are recorded, so only the run is created then.
            self.dispatcher.defer = None
            self._creators.shutdown(wait=False, cancel_futures=True)

    @property
    def full(self) -> bool:
        return self.depth >= self.capacity

    @property
    def depth(self) -> int:
        """Alerts waiting for a worker."""
        return len(self._queued) - self._taken

    def offer(self, alert: Alert) -> bool:
        """Queue the alert for dispatch; False when the queue is full or it is queued already
        (it waits in the inbox then)."""
        group = alert.id if alert.state == "resolved" else f"fingerprint:{alert.fingerprint}"
        with self._guard:
            if alert.id in self._queued or len(self._queued) - self._taken >= self.capacity:
                return False
            self._queued.add(alert.id)
            waiting = self._waiting.setdefault(group, [])
            waiting.append(alert)
            if len(waiting) == 1 and group not in self._busy:
                self._groups.put_nowait(group)  # a busy group is queued again when its worker is done
        return True

    def _work(self) -> None:
        while True:
            group = self._groups.get()
            if group is None:
                return
            since = time.monotonic() - self._last_done.get(group, -STORM_PACE)
            if since < STORM_PACE and not self._stop.is_set():
                time.sleep(STORM_PACE - since)  # the group's alerts gather meanwhile
            with self._guard:
                waiting = self._waiting.pop(group, [])
                taken, rest = waiting[:BATCH], waiting[BATCH:]
                if rest:
                    self._waiting[group] = rest
                self._busy.add(group)
                self._taken += len(taken)
            try:
                if self._deadline is not None and time.monotonic() > self._deadline:
                    continue  # stopping: they stay pending in the inbox for the next start or a replica
                for alert in self.dispatcher.dispatch_together(taken):
                    self.observe(alert)
            except Exception:
                log.exception("dispatch of %d alerts failed; they stay in the inbox and are retried", len(taken))
            finally:
                with self._guard:  # only now: the upkeep must not queue them again while they are dispatched
                    self._queued.difference_update(alert.id for alert in taken)
                    self._taken -= len(taken)
                    self._busy.discard(group)
                    self._last_done[group] = time.monotonic()
                    if group in self._waiting:
                        self._groups.put_nowait(group)

    def _renew(self) -> None:
        while not self._stop.wait(UPKEEP_SECONDS):
            try:
                self.dispatcher.store.refresh_claims(self.dispatcher.owner)
            except Exception:
                log.exception("could not renew this dispatcher's leases; trying again")

    def _upkeep(self) -> None:
        """Every second, and at once when Prefect answers again after an outage."""
        last, was_ready = time.monotonic(), True
        while not self._stop.wait(0.1):
            ready = self.ready() is None
            now = time.monotonic()
            if now - last >= UPKEEP_SECONDS or (ready and not was_ready):
                last = now
                try:
                    self.upkeep()
                except Exception:
                    log.exception("dispatch upkeep failed; trying again")
            was_ready = ready

    def upkeep(self, starting: bool = False) -> None:
        """``starting``: every alert left pending is queued, however young (nothing of this
        process is on its way yet)."""
        store = self.dispatcher.store
        now = utcnow()
        with self._guard:  # groups not dispatched for a while are no longer paced
            quiet = time.monotonic() - STORM_PACE
            self._last_done = {group: at for group, at in self._last_done.items() if at > quiet}
        if starting:
            # What this replica held when it stopped is free at once (not after the lease); a
            # live twin under the same name would have renewed its claims within the second.
            store.release_claims(self.dispatcher.owner, claimed_before=now - 2 * timedelta(seconds=UPKEEP_SECONDS))
        if self.ready() is None:
            with self._guard:
                queued = set(self._queued)
            for alert in store.redrivable_alerts(
                now if starting else now - QUEUE_GRACE, now - self.dispatcher.lease, limit=self.capacity, skip=queued
            ):
                if self.full:
                    break
                self.offer(alert)  # False: queued already, or being dispatched by a worker here
            self._upkeeps += 1
            if self._upkeeps % UNLAUNCHED_EVERY == 0:
                # A run selected whose alert was dispatched yet has no flow run (an older
                # release marked alerts dispatched before their runs existed): rare, so seldom.
                self.dispatcher.retry_unlaunched()
        if self.evidence is not None:
            preserve_joined(store_evidence=self.evidence, received_before=now - EVIDENCE_DELAY)


def preserve_joined(store_evidence: EvidenceStore, received_before: datetime, limit: int = 500) -> int:
    """Keep as evidence, in one item per incident and batch, the alerts that joined incidents and
    are not evidence yet; how many alerts were preserved."""
    store = store_evidence.store
    preserved = 0
    for incident_id, alert_ids in store.unpreserved_alerts(received_before, limit).items():
        alerts = store.alert_documents(alert_ids)
        if store_evidence.put_alerts(incident_id, alerts, "aisoar ingress") is not None:
            preserved += len(alerts)
            store.add_timeline(
                incident_id, "evidence", f"{len(alerts)} more alert(s) of this incident preserved as evidence"
            )
    return preserved
