"""One live process per replica id.

A replica names itself (``AISOAR_REPLICA_ID``) as the holder of its runs and alerts in the
store, and started again under its id it takes them back at once. Two live processes under one
id would each take the other's as their own and execute the same run twice, so a runtime holds
its id while it runs: it registers the id with a token of its process when it starts, beats it
every second with its runs' heartbeat, and frees it when it stops. A start finds the id:

* free, or freed by a clean stop: held at once;
* held by a process silent for ``SILENT_SECONDS`` (it was killed, its machine lost): taken over;
* held by a process that still beats: watched for up to ``WATCH_SECONDS`` (a process killed a
  moment ago stops beating within that time), then refused, saying which process holds it.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time

from aisoar.models import utcnow
from aisoar.store import Store

log = logging.getLogger("aisoar.runtime")
SILENT_SECONDS = 3.0  # a holder that has not beaten for this long has stopped (it beats every second)
WATCH_SECONDS = 4.0  # how long a start watches a holder that still beats before it refuses


class ReplicaIdInUse(RuntimeError):
    """Another live process runs under this replica id."""


class ReplicaIdLease:
    def __init__(self, store: Store, replica_id: str) -> None:
        self.store = store
        self.replica_id = replica_id
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._lost = False

    def hold(self, silent: float = SILENT_SECONDS, watch: float = WATCH_SECONDS) -> None:
        """Hold the id for this process, or raise ``ReplicaIdInUse``."""
        deadline = time.monotonic() + watch
        while True:
            holder = self.store.replica_holder(self.replica_id)
            if holder is None:
                if self.store.hold_replica_id(self.replica_id, self.instance, replacing=None):
                    return
                continue  # another start took it in between: look at it
            quiet = (utcnow() - holder.heartbeat_at).total_seconds()
            if quiet > silent:
                if self.store.hold_replica_id(self.replica_id, self.instance, replacing=holder.instance):
                    log.info(
                        "replica id %s taken over from %s (silent for %.1f s)", self.replica_id, holder.instance, quiet
                    )
                    return
                continue
            if time.monotonic() > deadline:
                host, _, rest = holder.instance.partition(":")
                pid = rest.partition(":")[0]
                raise ReplicaIdInUse(
                    f"another process runs as replica {self.replica_id!r} (host {host}, pid {pid}, started "
                    f"{holder.started_at:%Y-%m-%d %H:%M:%S} UTC, its heartbeat {quiet:.1f} s ago): two processes "
                    "under one id would each run the other's playbook runs; give each replica its own "
                    "AISOAR_REPLICA_ID (deployments/README.md)"
                )
            time.sleep(min(0.2, silent / 10))

    def beat(self) -> None:
        """Still held; said once (as an error) if another process took the id over meanwhile (this
        one was silent for longer than a start waits: stopped, or starved of CPU)."""
        if self.store.beat_replica_id(self.replica_id, self.instance):
            self._lost = False
        elif not self._lost:
            self._lost = True
            log.error(
                "replica id %s is held by another process now (this one was silent for over %.0f s): both "
                "may run the same playbook runs; stop one of them",
                self.replica_id,
                SILENT_SECONDS,
            )

    def release(self) -> None:
        self.store.release_replica_id(self.replica_id, self.instance)


__all__ = ["ReplicaIdInUse", "ReplicaIdLease"]
