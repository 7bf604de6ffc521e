"""Content-addressed, write-once evidence files with a chain-of-custody entry each.

A file is stored under ``<data dir>/evidence/<sha256[:2]>/<sha256>`` and made read-only;
storing the same bytes twice writes nothing new. Every collection appends a custody
entry (who, when, what, hash, where) to the hash-chained ledger in the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from aisoar.store import EvidenceRecord, Store
from aisoar.store.evidence import EvidenceItem


class EvidenceTampered(RuntimeError):
    """An evidence file no longer matches the hash it was stored under."""


class EvidenceStore:
    def __init__(self, root: Path, store: Store) -> None:
        self.root = root
        self.store = store

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def write(self, content: bytes) -> tuple[str, Path]:
        """The bytes on disk, once, read-only, under their hash: (sha256, path)."""
        sha256 = hashlib.sha256(content).hexdigest()
        path = self.path_for(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self.verify_file(sha256)
        else:
            # unique per writer: two steps (threads) may store the same bytes at the same time
            tmp = path.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
            with open(tmp, "xb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, path)  # atomic, fails if another writer won the race
            except FileExistsError:
                self.verify_file(sha256)
            finally:
                tmp.unlink(missing_ok=True)
        return sha256, path

    def put(
        self,
        incident_id: str,
        content: bytes,
        description: str,
        collected_by: str,
        media_type: str = "application/json",
        asset: str | None = None,
    ) -> EvidenceRecord:
        """Store ``content`` once and append its custody entry; ``asset`` names what it is about
        (the same reference the changing steps on that asset use)."""
        sha256, path = self.write(content)
        return self.store.record_evidence(
            incident_id=incident_id,
            sha256=sha256,
            size=len(content),
            media_type=media_type,
            description=description,
            location=str(path),
            collected_by=collected_by,
            asset=asset,
        )

    def put_json(
        self,
        incident_id: str,
        document: Any,
        description: str,
        collected_by: str,
        asset: str | None = None,
        flow_run_id: str | None = None,
    ) -> EvidenceRecord:
        return self.put_json_many(incident_id, [(document, description, asset)], collected_by, flow_run_id)[0]

    def put_json_many(
        self,
        incident_id: str,
        documents: Sequence[tuple[Any, str, str | None]],
        collected_by: str,
        flow_run_id: str | None = None,
    ) -> list[EvidenceRecord]:
        """Several documents (document, description, asset) of one collecting step (of the run
        ``flow_run_id``): each file stored once, their custody entries appended in order in one
        transaction."""
        items: list[EvidenceItem] = []
        for document, description, asset in documents:
            content = json.dumps(document, sort_keys=True, indent=2, default=str).encode()
            sha256, path = self.write(content)
            items.append(
                EvidenceItem(
                    sha256, len(content), "application/json", description, str(path), collected_by, asset, flow_run_id
                )
            )
        return self.store.record_evidence_items(incident_id, items)

    def put_alerts(self, incident_id: str, alerts: list[dict[str, Any]], collected_by: str) -> EvidenceRecord | None:
        """Alerts of one incident (as stored: ``Store.alert_documents``) preserved as one
        evidence item: one file, one custody entry.

        Payloads are kept once per content hash (a storm repeats one payload), each with the ids
        and receipt times of the alerts that carried it. Only alerts not yet preserved (by their
        incident's run or another batch) count; None when every one already was."""
        by_payload: dict[str, dict[str, Any]] = {}
        for alert in sorted(alerts, key=lambda a: (datetime.fromisoformat(a["received_at"]), a["id"])):
            entry = by_payload.setdefault(
                alert["raw_sha256"], {"raw_sha256": alert["raw_sha256"], "alert": alert, "copies": []}
            )
            entry["copies"].append({"alert_id": alert["id"], "received_at": alert["received_at"]})
        document = {"incident_id": incident_id, "alerts": len(alerts), "payloads": list(by_payload.values())}
        # Compact: hundreds of alerts a batch in a storm, and indented JSON is written by the
        # json module's Python encoder, several times slower than its C one (`jq .` indents it).
        content = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()
        sha256, path = self.write(content)
        sources = ", ".join(sorted({a["source"] for a in alerts}))
        return self.store.preserve_alerts(
            [a["id"] for a in alerts],
            incident_id=incident_id,
            sha256=sha256,
            size=len(content),
            description=f"{len(alerts)} alert(s) from {sources} ({len(by_payload)} distinct payload(s))",
            location=str(path),
            collected_by=collected_by,
        )

    def verify_file(self, sha256: str) -> None:
        actual = hashlib.sha256(self.path_for(sha256).read_bytes()).hexdigest()
        if actual != sha256:
            raise EvidenceTampered(f"evidence file {self.path_for(sha256)} hashes to {actual}, expected {sha256}")
