"""The replica ids in use. A replica names itself (``AISOAR_REPLICA_ID``) as the holder of its
runs and alerts, and a replica started again under its id takes them back at once; so two live
processes under one id would each take the other's as their own. Each holds its id with a token
of its process (``instance``) and beats it every second; a start finds out whether the id's
holder still beats (``PlaybookRuntime``, flows/runtime.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from aisoar.models import utcnow
from aisoar.store.schema import StoreBase, aware, replica_ids


@dataclass(frozen=True)
class ReplicaHolder:
    instance: str
    started_at: datetime
    heartbeat_at: datetime


class ReplicaIds(StoreBase):
    def replica_holder(self, replica_id: str) -> ReplicaHolder | None:
        """The process that holds the replica id, and its last heartbeat; None: nobody."""
        with self._read() as conn:
            row = conn.execute(sa.select(replica_ids).where(replica_ids.c.replica_id == replica_id)).first()
        if row is None:
            return None
        return ReplicaHolder(str(row.instance), aware(row.started_at) or utcnow(), aware(row.heartbeat_at) or utcnow())

    def hold_replica_id(self, replica_id: str, instance: str, replacing: str | None) -> bool:
        """Hold the id for this process (``instance``): a free id, or one whose holder was seen
        as ``replacing`` (compare-and-set: of two processes that saw the same holder, one wins)."""
        now = utcnow()
        with self._tx() as conn:
            if replacing is None:
                return self._insert_new(
                    conn, replica_ids, replica_id=replica_id, instance=instance, started_at=now, heartbeat_at=now
                )
            result = conn.execute(
                replica_ids.update()
                .where(replica_ids.c.replica_id == replica_id, replica_ids.c.instance == replacing)
                .values(instance=instance, started_at=now, heartbeat_at=now)
            )
        return bool(result.rowcount)

    def beat_replica_id(self, replica_id: str, instance: str) -> bool:
        """This process still holds the id; False when another process holds it now."""
        with self._tx() as conn:
            result = conn.execute(
                replica_ids.update()
                .where(replica_ids.c.replica_id == replica_id, replica_ids.c.instance == instance)
                .values(heartbeat_at=utcnow())
            )
        return bool(result.rowcount)

    def release_replica_id(self, replica_id: str, instance: str) -> None:
        """The id is free at once (a clean stop): the next start under it does not wait."""
        with self._tx() as conn:
            conn.execute(
                replica_ids.delete().where(replica_ids.c.replica_id == replica_id, replica_ids.c.instance == instance)
            )
