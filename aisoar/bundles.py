"""An incident's signed evidence manifest, kept in the data directory, its export as a portable
bundle, and its verification on this machine (``aisoar/manifest.py`` does the signing and the
checks; this module reads the store and the evidence files)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aisoar.config import Settings
from aisoar.evidence import EvidenceStore
from aisoar.manifest import (
    ManifestError,
    Verification,
    build_manifest,
    ensure_signing_key,
    key_id,
    public_pem,
    verify_manifest,
    write_bundle,
)
from aisoar.models import utcnow
from aisoar.store import Store


@dataclass(frozen=True)
class Custody:
    """What an incident's evidence is checked with: the store, the files, the installation's key."""

    settings: Settings
    store: Store
    evidence: EvidenceStore

    @property
    def key(self) -> Ed25519PrivateKey:
        return ensure_signing_key(self.settings.data_dir)[0]

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.key.public_key()

    def manifest_path(self, incident_id: str) -> Path:
        return self.settings.data_dir / "manifests" / f"{incident_id}.json"

    def _bytes(self, sha256: str) -> bytes | None:
        """An evidence file's bytes as they are now; None when it is gone."""
        path = self.evidence.path_for(sha256)
        return path.read_bytes() if path.is_file() else None

    def sign(self, incident_id: str, now: datetime | None = None) -> dict[str, Any]:
        """A signed manifest of the incident's evidence as it stands, kept as the incident's
        latest (``ManifestError`` names each item whose bytes no longer match: nothing is signed)."""
        incident = self.store.get_incident(incident_id, with_timeline=False)
        summary = {
            "id": incident.id,
            "title": incident.title,
            "type": incident.type.value if incident.type else None,
            "severity": incident.severity.value,
            "status": incident.status.value,
        }
        records = self.store.evidence_for(incident_id)
        manifest = build_manifest(summary, records, lambda r: self._bytes(r.sha256), self.key, now or utcnow())
        path = self.manifest_path(incident_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        partial.replace(path)
        return manifest

    def latest(self, incident_id: str) -> dict[str, Any] | None:
        path = self.manifest_path(incident_id)
        if not path.is_file():
            return None
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded

    def verify(self, incident_id: str) -> Verification:
        """The incident's latest signed manifest (signed now when there is none) checked against
        this machine's key, the evidence files and the store's custody chain."""
        manifest = self.latest(incident_id)
        result = Verification()
        if manifest is None:
            try:
                manifest = self.sign(incident_id)
            except ManifestError as exc:  # the files changed before any manifest was signed
                result.problems.append(str(exc))
                return result
        result = verify_manifest(manifest, lambda item: self._bytes(str(item.get("sha256"))), self.public_key)
        result.problems += self.store.verify_custody_chain(incident_id)
        signed = {str(item.get("entry_hash")) for item in manifest.get("items") or []}
        later = [r for r in self.store.evidence_for(incident_id) if r.entry_hash not in signed]
        if later:
            result.notes.append(
                f"{len(later)} item(s) were collected after this manifest was signed; `aisoar export` signs a new one"
            )
        return result

    def export(
        self, incident_id: str, target: Path, report: str, formats: dict[str, bytes] | None = None
    ) -> dict[str, Any]:
        """A bundle of a newly signed manifest, the evidence files, the report (markdown, and the
        other ``formats`` by file name) and the public key."""
        manifest = self.sign(incident_id)
        files = [(str(item["file"]), self.evidence.path_for(str(item["sha256"]))) for item in manifest["items"]]
        write_bundle(target, manifest, dict(files).items(), report, public_pem(self.public_key), formats or {})
        return manifest

    def prune(self, now: datetime | None = None, dry_run: bool = False) -> dict[str, int]:
        """Delete the evidence files of incidents closed longer than the retention ago and not on
        legal hold (a file another kept incident holds stays); the files deleted, by incident.
        The custody entries and the signed manifest stay: they say what was kept and deleted."""
        days = self.settings.evidence_retention_days
        expired, kept = self.store.evidence_past_retention((now or utcnow()) - timedelta(days=days))
        deleted: dict[str, int] = {}
        for incident_id, hashes in sorted(expired.items()):
            paths = [self.evidence.path_for(sha) for sha in sorted(set(hashes) - kept)]
            present = [path for path in paths if path.is_file()]
            if not present:
                continue
            deleted[incident_id] = len(present)
            if dry_run:
                continue
            for path in present:
                path.unlink(missing_ok=True)
            self.store.add_timeline(
                incident_id,
                "incident",
                f"evidence retention ({days} days after the close) passed: {len(present)} evidence file(s) deleted; "
                "the custody entries and the signed manifest stay",
            )
        return deleted

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def key_line(self) -> str:
        return f"Ed25519 key {self.key_id}"

    def signing(self) -> Signing:
        return Signing(self.key_id, public_pem(self.public_key))


@dataclass(frozen=True)
class Signing:
    """The key an incident's evidence manifest is signed with, as the report shows it."""

    key_id: str
    public_key_pem: str
