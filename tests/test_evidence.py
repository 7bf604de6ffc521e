"""Evidence: content-addressed, write-once, with a hash-chained custody ledger."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from aisoar.config import Settings
from aisoar.evidence import EvidenceStore, EvidenceTampered
from aisoar.store import Store, evidence_items


@pytest.fixture()
def evidence(settings: Settings) -> EvidenceStore:
    return EvidenceStore(settings.evidence_dir, Store(settings.store_url))


def test_stored_by_hash_read_only_with_custody(evidence: EvidenceStore) -> None:
    record = evidence.put("INC-1", b'{"spend": 12}', "gateway record", "tester")
    path = Path(record.location)
    assert record.sha256 == hashlib.sha256(b'{"spend": 12}').hexdigest()
    assert path.name == record.sha256 and path.read_bytes() == b'{"spend": 12}'
    assert not path.stat().st_mode & 0o222
    assert record.collected_by == "tester" and record.prev_hash == "0" * 64


def test_the_same_bytes_twice_write_once_and_chain_two_entries(evidence: EvidenceStore) -> None:
    first = evidence.put("INC-1", b"same", "a", "tester")
    second = evidence.put("INC-2", b"same", "b", "tester")
    third = evidence.put("INC-1", b"same", "c", "tester")
    assert first.location == second.location == third.location
    # One chain per incident: INC-2's starts anew, INC-1's goes on from its own last entry.
    assert second.prev_hash == "0" * 64 and third.prev_hash == first.entry_hash
    assert {first.chain, second.chain, third.chain} == {"incident"}
    assert evidence.store.verify_custody_chain() == []


def test_a_steps_documents_kept_together_chain_in_order_after_the_incidents_last(evidence: EvidenceStore) -> None:
    """A step that keeps two documents appends both entries in one transaction: chained to the
    incident's last entry and to each other, in the order given, as two keeps would."""
    before = evidence.put("INC-1", b"earlier", "a", "tester")
    evidence.put("INC-2", b"elsewhere", "x", "tester")
    record, logs = evidence.put_json_many(
        "INC-1", [({"key": "record"}, "the key", "litellm:virtual-key:k"), ({"rows": []}, "its logs", None)], "tester"
    )
    assert record.prev_hash == before.entry_hash and logs.prev_hash == record.entry_hash
    assert (record.asset, logs.asset) == ("litellm:virtual-key:k", None)
    stored = evidence.store.evidence_for("INC-1")
    assert [r.entry_hash for r in stored] == [before.entry_hash, record.entry_hash, logs.entry_hash]
    assert evidence.path_for(logs.sha256).read_bytes() == b'{\n  "rows": []\n}'
    assert evidence.store.verify_custody_chain() == []


def test_an_entry_removed_from_an_incident_chain_or_moved_between_chains_is_detected(evidence: EvidenceStore) -> None:
    evidence.put("INC-1", b"one", "a", "tester")
    evidence.put("INC-2", b"other", "x", "tester")
    evidence.put("INC-1", b"two", "b", "tester")
    evidence.put("INC-1", b"three", "c", "tester")
    with evidence.store.engine.begin() as conn:
        conn.execute(sa.delete(evidence_items).where(evidence_items.c.id == 3))
    assert [p.split(" (")[0] + ":" + p.split(":", 1)[1] for p in evidence.store.verify_custody_chain()] == [
        "custody entry 4: previous hash does not match the chain"
    ]
    with evidence.store.engine.begin() as conn:  # into the store's chain of old entries: its hash changes
        conn.execute(sa.update(evidence_items).where(evidence_items.c.id == 2).values(chain=None))
    assert any(
        p.startswith("custody entry 2 (") and p.endswith("its hash does not match its content")
        for p in evidence.store.verify_custody_chain()
    )


def test_entries_from_before_per_incident_chains_verify_as_the_store_chain(evidence: EvidenceStore) -> None:
    """Entries written before migration 0005 form one chain for the whole store (no ``chain``
    in their hash); newer entries chain within their incident; both verify side by side."""
    from aisoar.store.evidence import GENESIS, custody_hash

    prev = GENESIS
    with evidence.store.engine.begin() as conn:
        for i, incident in enumerate(["INC-1", "INC-2", "INC-1"]):
            entry = {
                "incident_id": incident,
                "sha256": f"{i:064d}",
                "size": 1,
                "media_type": "text/plain",
                "description": f"old {i}",
                "location": "x",
                "collected_by": "old",
                "collected_at": datetime(2026, 1, 1, tzinfo=UTC),
            }
            entry_hash = custody_hash(prev, entry)
            conn.execute(evidence_items.insert().values(**entry, prev_hash=prev, entry_hash=entry_hash))
            prev = entry_hash
    newer = evidence.put("INC-1", b"new", "new", "tester")
    assert newer.prev_hash == GENESIS  # the first entry of INC-1's own chain
    assert evidence.store.verify_custody_chain() == []
    with evidence.store.engine.begin() as conn:
        conn.execute(sa.delete(evidence_items).where(evidence_items.c.description == "old 1"))
    assert [p.split(" (")[0] + ":" + p.split(":", 1)[1] for p in evidence.store.verify_custody_chain()] == [
        "custody entry 3: previous hash does not match the chain"
    ]


def test_a_tampered_file_is_detected(evidence: EvidenceStore) -> None:
    record = evidence.put("INC-1", b"original", "a", "tester")
    path = Path(record.location)
    path.chmod(0o644)
    path.write_bytes(b"changed")
    with pytest.raises(EvidenceTampered):
        evidence.put("INC-1", b"original", "a", "tester")


def test_an_edited_ledger_entry_breaks_the_chain(evidence: EvidenceStore) -> None:
    evidence.put("INC-1", b"one", "a", "tester")
    evidence.put("INC-1", b"two", "b", "tester")
    with evidence.store.engine.begin() as conn:
        conn.execute(sa.update(evidence_items).where(evidence_items.c.id == 1).values(collected_by="mallory"))
    problems = evidence.store.verify_custody_chain()
    assert [p.split(" (")[0] + ":" + p.split(":", 1)[1] for p in problems] == [
        "custody entry 1: its hash does not match its content"
    ]


def test_two_steps_storing_the_same_bytes_at_once_both_succeed(evidence: EvidenceStore) -> None:
    """Two playbooks of one incident keep the same alert at the same moment (threads of one process)."""
    from concurrent.futures import ThreadPoolExecutor

    content = b'{"alert": "same bytes from two playbooks"}'
    barrier = threading.Barrier(8)

    def put(n: int) -> str:
        barrier.wait()
        return evidence.put("INC-1", content, f"copy {n}", "test").sha256

    with ThreadPoolExecutor(8) as pool:
        hashes = set(pool.map(put, range(8)))
    assert hashes == {hashlib.sha256(content).hexdigest()}
    assert len(evidence.store.evidence_for("INC-1")) == 8
    assert evidence.store.verify_custody_chain() == []
