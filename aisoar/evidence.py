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
from pathlib import Path
from typing import Any

from aisoar.store import EvidenceRecord, Store


class EvidenceTampered(RuntimeError):
    """An evidence file no longer matches the hash it was stored under."""


class EvidenceStore:
    def __init__(self, root: Path, store: Store) -> None:
        self.root = root
        self.store = store

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

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
        self, incident_id: str, document: Any, description: str, collected_by: str, asset: str | None = None
    ) -> EvidenceRecord:
        content = json.dumps(document, sort_keys=True, indent=2, default=str).encode()
        return self.put(incident_id, content, description, collected_by, asset=asset)

    def verify_file(self, sha256: str) -> None:
        actual = hashlib.sha256(self.path_for(sha256).read_bytes()).hexdigest()
        if actual != sha256:
            raise EvidenceTampered(f"evidence file {self.path_for(sha256)} hashes to {actual}, expected {sha256}")
