"""The services a playbook run uses, built once per process from the settings."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from aisoar.approvers import ApproverDirectory, DirectoryError, gate_problems, load_directory
from aisoar.config import Settings, get_settings
from aisoar.evidence import EvidenceStore
from aisoar.specs import PlaybookSpec, load_specs
from aisoar.store import Store
from tasks import catalog


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: Store
    evidence: EvidenceStore
    specs: dict[str, PlaybookSpec]
    approvers: ApproverDirectory


_lock = threading.Lock()
_services: Services | None = None


def build_services(settings: Settings) -> Services:
    store = Store(settings.store_url)
    specs = {loaded.spec.name: loaded.spec for loaded in load_specs(settings.specs_dir, catalog())}
    approvers = load_directory(settings.approvers_file)
    if problems := gate_problems(specs.values(), approvers):
        raise DirectoryError("nobody could answer some approval gates:\n  " + "\n  ".join(problems))
    return Services(
        settings=settings,
        store=store,
        evidence=EvidenceStore(settings.evidence_dir, store),
        specs=specs,
        approvers=approvers,
    )


def services() -> Services:
    global _services
    with _lock:
        if _services is None:
            _services = build_services(get_settings())
        return _services


def use_services(value: Services | None) -> None:
    """Install the services this process runs with (the runtime does this at start)."""
    global _services
    with _lock:
        _services = value
