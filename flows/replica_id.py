"""One live process per replica id.

A replica names itself (``AISOAR_REPLICA_ID``) as the holder of its runs and alerts in the
store, and started again under its id it takes them back at once. Two live processes under one
id would each take the other's as their own and execute the same run twice, so a runtime holds
its id while it runs: it registers the id with a token of its process when it starts, beats it
every second with its runs' heartbeat, and frees it when it stops. A start finds the id:

* free, or freed by a clean stop: held at once;
* held by a process whose last heartbeat is over ``GONE_SECONDS`` old: taken over at once;
* otherwise watched: a holder that beats meanwhile is alive, and the start is refused, saying
  which process holds the id; one that does not beat for ``SILENT_SECONDS`` of watching (it was
  killed a moment ago, its machine lost) is taken over. The watch compares the holder's own
  heartbeats with each other, so the replicas' clocks need not agree to the second.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from datetime import datetime

from aisoar.models import utcnow
from aisoar.store import ReplicaHolder, Store

log = logging.getLogger("aisoar.runtime")
SILENT_SECONDS = 4.0  # watched this long without a heartbeat (it beats every second): stopped
GONE_SECONDS = 30.0  # a last heartbeat this old (by this machine's clock): stopped, no need to watch


class ReplicaIdInUse(RuntimeError):
    """Another live process runs under this replica id."""


class ReplicaIdLease:
    def __init__(self, store: Store, replica_id: str) -> None:
        self.store = store
        self.replica_id = replica_id
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._lost = False

    def hold(self, silent: float = SILENT_SECONDS, gone: float = GONE_SECONDS) -> None:
        """Hold the id for this process, or raise ``ReplicaIdInUse``."""
        watched: tuple[str, datetime] | None = None  # the holder's heartbeat when the watch began
        since = time.monotonic()
        while True:
            holder = self.store.replica_holder(self.replica_id)
            if holder is None:
                if self.store.hold_replica_id(self.replica_id, self.instance, replacing=None):
                    return
                continue  # another start took it in between: look at it
            seen = (holder.instance, holder.heartbeat_at)
            if watched is None or watched[0] != holder.instance:
                watched, since = seen, time.monotonic()  # a new holder: watch it from now
            elif seen != watched:
                raise ReplicaIdInUse(self._in_use(holder))  # it beat while watched: alive
            quiet = (utcnow() - holder.heartbeat_at).total_seconds()
            if quiet > gone or time.monotonic() - since > silent:
                if self.store.hold_replica_id(self.replica_id, self.instance, replacing=holder.instance):
                    log.info("replica id %s taken over from %s (silent)", self.replica_id, holder.instance)
                    return
                continue
            time.sleep(min(0.2, silent / 10))

    def _in_use(self, holder: ReplicaHolder) -> str:
        host, _, rest = holder.instance.partition(":")
        pid = rest.partition(":")[0]
        return (
            f"another process runs as replica {self.replica_id!r} (host {host}, pid {pid}, started "
            f"{holder.started_at:%Y-%m-%d %H:%M:%S} UTC, still beating): two processes under one id would each "
            "run the other's playbook runs; give each replica its own AISOAR_REPLICA_ID (deployments/README.md)"
        )

    def beat(self) -> None:
        """Still held; said once (as an error) if another process took the id over meanwhile (this
        one was silent for longer than a start waits: stopped, or starved of CPU)."""
        if self.store.beat_replica_id(self.replica_id, self.instance):
            self._lost = False
        elif not self._lost:
            self._lost = True
            log.error(
                "replica id %s is held by another process now (it saw no heartbeat of this one for %.0f s): "
                "both may run the same playbook runs; stop one of them",
                self.replica_id,
                SILENT_SECONDS,
            )

    def release(self) -> None:
        self.store.release_replica_id(self.replica_id, self.instance)


__all__ = ["ReplicaIdInUse", "ReplicaIdLease"]
