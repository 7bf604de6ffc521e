"""Evidence anyone can verify: the incident's signed manifest, its bundle, and `aisoar verify`
pinpointing what was changed (a byte of a file, a custody entry, the manifest itself), here and
on another machine (another data directory, with only the bundle and the public key)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from aisoar.bundles import Custody
from aisoar.config import PROJECT_ROOT, Settings
from aisoar.evidence import EvidenceStore
from aisoar.ingress.adapters import generic_json
from aisoar.manifest import ManifestError, ensure_signing_key, key_id, load_public_key, verify_bundle
from aisoar.models import Severity
from aisoar.store import Store, evidence_items
from tests.conftest import make_settings

RECORD = {"key": "sk-…3f9a", "spend_usd": 412.5, "requests": [{"at": "2026-12-04T10:00:00Z", "model": "gpt-4o"}] * 100}


def incident_with_evidence(settings: Settings) -> tuple[Custody, str]:
    store = Store(settings.store_url)
    alert = generic_json("generic", (PROJECT_ROOT / "examples/alerts/leaked-openai-key.json").read_bytes())
    store.accept_alert(alert, "delivery")
    incident_id, _ = store.correlate(alert, alert.incident_type, Severity.critical, timedelta(hours=1))
    evidence = EvidenceStore(settings.evidence_dir, store)
    evidence.put_json(incident_id, {"alert": alert.id}, "the alert", "aisoar:leaked-llm-api-key/preserve-alerts")
    evidence.put_json(
        incident_id,
        RECORD,
        "gateway key record and request logs",
        "aisoar:leaked-llm-api-key/preserve-key-record",
        asset="litellm:virtual-key:abc",
        flow_run_id="0b6f4a9e-0000-4000-8000-000000000001",
    )
    return Custody(settings, store, evidence), incident_id


@pytest.fixture()
def custody(tmp_path: Path) -> tuple[Custody, str]:
    return incident_with_evidence(make_settings(tmp_path / "data"))


def test_the_manifest_lists_every_item_and_verifies(custody: tuple[Custody, str]) -> None:
    signer, incident_id = custody
    manifest = signer.sign(incident_id)
    first, second = manifest["items"]
    assert (
        second["what"] == "gateway key record and request logs"
        and second["step"] == "leaked-llm-api-key/preserve-key-record"
    )
    assert second["flow_run_id"].startswith("0b6f4a9e") and second["asset"] == "litellm:virtual-key:abc"
    assert second["prev_hash"] == first["entry_hash"] and manifest["chain_head"] == second["entry_hash"]
    assert manifest["signing_key"]["id"] == signer.key_id and manifest["signing_key"]["algorithm"] == "Ed25519"
    result = signer.verify(incident_id)
    assert result.ok and result.items == 2 and result.key_id == signer.key_id, result.problems
    # The key was made once, owner-only; the next use reads it.
    key_file = signer.settings.data_dir / "evidence-signing-key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert ensure_signing_key(signer.settings.data_dir)[1] is False


def test_replicas_starting_at_once_make_one_key_and_none_reads_half_of_it(tmp_path: Path) -> None:
    """Replicas share the data directory: the first start of several at once makes one key, and
    none of them reads the file while another is still writing it."""
    for round_ in range(30):
        data_dir = tmp_path / f"data-{round_}"
        start = threading.Barrier(8)

        def first_start(_: int, data_dir: Path = data_dir, start: threading.Barrier = start) -> tuple[str, bool]:
            start.wait()
            key, made = ensure_signing_key(data_dir)
            return key_id(key.public_key()), made

        with ThreadPoolExecutor(8) as pool:
            started = list(pool.map(first_start, range(8)))
        assert len({kid for kid, _ in started}) == 1, started
        assert [made for _, made in started].count(True) == 1, started
        assert sorted(p.name for p in data_dir.iterdir()) == ["evidence-signing-key.pem", "evidence-signing-key.pub"]
        assert key_id(load_public_key((data_dir / "evidence-signing-key.pub").read_text())) == started[0][0]


def test_a_changed_byte_is_found_to_its_item_and_block(custody: tuple[Custody, str], tmp_path: Path) -> None:
    signer, incident_id = custody
    bundle = tmp_path / "bundle.tar.gz"
    manifest = signer.export(incident_id, bundle, "# report\n")
    assert verify_bundle(bundle, signer.public_key).ok
    item = manifest["items"][1]
    content = bytearray(signer.evidence.path_for(item["sha256"]).read_bytes())
    at = 3000  # in the third 1 KiB block
    content[at] ^= 0x01
    tampered = rewrite(bundle, tmp_path / "tampered.tar.gz", {item["file"]: bytes(content)})
    result = verify_bundle(tampered, signer.public_key)
    assert len(result.problems) == 1, result.problems
    (problem,) = result.problems
    assert problem.startswith(
        f"item 2 (sha256 {item['sha256'][:12]}…, 'gateway key record and request logs'): its bytes hash"
    )
    assert "changed bytes in 2048-3071 (blocks of 1024)" in problem


def test_a_changed_manifest_or_another_key_fails_the_signature(custody: tuple[Custody, str], tmp_path: Path) -> None:
    signer, incident_id = custody
    bundle = tmp_path / "bundle.tar.gz"
    manifest = signer.export(incident_id, bundle, "# report\n")
    manifest["items"][0]["what"] = "nothing to see"  # the description changed after signing
    changed = rewrite(bundle, tmp_path / "changed.tar.gz", {"manifest.json": json.dumps(manifest).encode()})
    problems = verify_bundle(changed, signer.public_key).problems
    assert any(p.startswith("the signature does not match the manifest") for p in problems), problems
    other = Custody(make_settings(tmp_path / "other"), signer.store, signer.evidence)
    problems = verify_bundle(bundle, other.public_key).problems
    assert f"signed with key {signer.key_id}, not with the key you gave ({other.key_id})" in problems


def test_a_changed_custody_entry_breaks_the_chain_and_names_the_entry(custody: tuple[Custody, str]) -> None:
    signer, incident_id = custody
    signer.sign(incident_id)
    with signer.store.engine.begin() as conn:  # someone edits the store's ledger
        conn.execute(sa.update(evidence_items).where(evidence_items.c.id == 1).values(collected_by="someone else"))
    problems = signer.verify(incident_id).problems
    assert any(
        p.startswith("custody entry 1 (") and p.endswith("its hash does not match its content") for p in problems
    )


def test_evidence_changed_before_signing_is_not_signed(custody: tuple[Custody, str]) -> None:
    signer, incident_id = custody
    record = signer.store.evidence_for(incident_id)[0]
    path = signer.evidence.path_for(record.sha256)
    os.chmod(path, 0o644)
    path.write_bytes(b"{}")
    with pytest.raises(ManifestError, match=r"not signed: item 1 \(sha256 .*'the alert'\): its file no longer hashes"):
        signer.sign(incident_id)


def test_a_hostile_bundle_is_read_never_extracted(custody: tuple[Custody, str], tmp_path: Path) -> None:
    signer, incident_id = custody
    bundle = tmp_path / "bundle.tar.gz"
    signer.export(incident_id, bundle, "# report\n")
    hostile = tmp_path / "hostile.tar.gz"
    with tarfile.open(bundle, "r:gz") as source, tarfile.open(hostile, "w:gz") as target:
        for member in source.getmembers():
            handle = source.extractfile(member)
            assert handle is not None
            target.addfile(member, handle)
        escape = tarfile.TarInfo("../../escaped.txt")
        escape.size = 3
        target.addfile(escape, io.BytesIO(b"owned"[:3]))
        link = tarfile.TarInfo("evidence/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        target.addfile(link)
    assert verify_bundle(hostile, signer.public_key).ok
    assert not (tmp_path.parent.parent / "escaped.txt").exists()
    with pytest.raises(ManifestError, match="is not a readable bundle"):
        verify_bundle(PROJECT_ROOT / "README.md")


def test_export_and_verify_on_another_machine(custody: tuple[Custody, str], tmp_path: Path) -> None:
    """`aisoar export` here; `aisoar verify --bundle` with another data directory (no store, no
    key of its own) and the public key from the report; then a byte changed in the bundle."""
    signer, incident_id = custody
    here = {**os.environ, "AISOAR_DATA_DIR": str(signer.settings.data_dir), "AISOAR_SANDBOX": "false"}
    bundle = tmp_path / "INC.tar.gz"
    exported = cli("export", incident_id, "--out", str(bundle), env=here)
    assert exported.returncode == 0, exported.stderr
    assert f"2 evidence item(s), signed with Ed25519 key {signer.key_id}" in exported.stdout
    with tarfile.open(bundle, "r:gz") as opened:
        names = set(opened.getnames())
        report = opened.extractfile("report.md").read().decode()  # type: ignore[union-attr]
    assert {"manifest.json", "report.md", "signing-key.pub"} <= names
    assert f"signed with Ed25519 key **{signer.key_id}**" in report
    public = tmp_path / "signer.pub"
    public.write_text(report.split("```\n")[1].split("```")[0])
    assert load_public_key(public.read_text()).public_bytes_raw() == signer.public_key.public_bytes_raw()

    elsewhere = {**os.environ, "AISOAR_DATA_DIR": str(tmp_path / "auditor"), "AISOAR_SANDBOX": "false"}
    checked = cli("verify", "--bundle", str(bundle), "--public-key", str(public), env=elsewhere)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "intact: 2 evidence item(s) re-hashed" in checked.stdout
    item = json.loads(read_member(bundle, "manifest.json"))["items"][0]
    content = bytearray(read_member(bundle, item["file"]))
    content[5] ^= 0x20
    tampered = rewrite(bundle, tmp_path / "tampered.tar.gz", {item["file"]: bytes(content)})
    failed = cli("verify", "--bundle", str(tampered), "--public-key", str(public), env=elsewhere)
    assert failed.returncode == 1
    assert (
        "1 problem(s)" in failed.stdout and "item 1 (sha256" in failed.stdout and "changed bytes in 0-" in failed.stdout
    )
    here_checked = cli("verify", incident_id, env=here)
    assert here_checked.returncode == 0 and "intact" in here_checked.stdout, here_checked.stdout + here_checked.stderr


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def read_member(bundle: Path, name: str) -> bytes:
    with tarfile.open(bundle, "r:gz") as opened:
        handle = opened.extractfile(name)
        assert handle is not None
        return handle.read()


def rewrite(bundle: Path, target: Path, replaced: dict[str, bytes]) -> Path:
    """A copy of ``bundle`` with some members' bytes replaced (what someone altering it does)."""
    with tarfile.open(bundle, "r:gz") as source, tarfile.open(target, "w:gz") as copy:
        for member in source.getmembers():
            handle = source.extractfile(member)
            assert handle is not None
            content = replaced.get(member.name, handle.read())
            member.size = len(content)
            copy.addfile(member, io.BytesIO(content))
    return target


def test_retention_deletes_closed_evidence_unless_on_legal_hold(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from aisoar.models import IncidentStatus

    signer, held = incident_with_evidence(make_settings(tmp_path / "data", evidence_retention_days=30))
    store = signer.store
    _, other = incident_with_evidence(make_settings(tmp_path / "data", evidence_retention_days=30))
    assert other == held  # the same alert correlates: open a second incident of its own
    alert = generic_json("generic", (PROJECT_ROOT / "examples/alerts/data-leakage.json").read_bytes())
    store.accept_alert(alert, "delivery-2")
    expiring, _ = store.correlate(alert, alert.incident_type, Severity.high, timedelta(hours=1))
    signer.evidence.put_json(expiring, {"leak": "records"}, "the leak's records", "aisoar:data-leakage/keep")
    shared = signer.evidence.put_json(expiring, {"alert": "shared"}, "shared bytes", "aisoar:data-leakage/keep")
    signer.evidence.put_json(held, {"alert": "shared"}, "shared bytes", "aisoar:leaked-llm-api-key/keep")
    signer.sign(expiring)
    for incident_id in (held, expiring):
        store.set_incident_status(incident_id, IncidentStatus.closed)
    store.set_legal_hold(held, "counsel", "case 2026-118: keep everything")
    later = datetime.now(UTC) + timedelta(days=31)

    assert signer.prune(now=datetime.now(UTC)) == {}  # within the retention: nothing
    assert signer.prune(now=later, dry_run=True) == {expiring: 1}
    assert signer.prune(now=later) == {expiring: 1}  # the shared file stays: the held incident keeps it
    files = {r.description: signer.evidence.path_for(r.sha256).is_file() for r in store.evidence_for(expiring)}
    assert files == {"the leak's records": False, "shared bytes": True}
    assert signer.evidence.path_for(shared.sha256).is_file()
    assert all(signer.evidence.path_for(r.sha256).is_file() for r in store.evidence_for(held))
    timeline = [e.message for e in store.get_incident(expiring).timeline]
    assert any(
        m.startswith("evidence retention (30 days after the close) passed: 1 evidence file(s) deleted")
        for m in timeline
    )
    problems = signer.verify(expiring).problems  # the manifest still says what was kept, and what is gone
    assert len(problems) == 1 and problems[0].endswith("the leak's records\"): its file is missing"), problems
    assert store.legal_hold(held)["by"] == "counsel"
    store.release_legal_hold(held, "counsel", "case closed")
    assert store.legal_hold(held) is None
    # Its own three files (two alerts, the record), and the shared one: no kept incident holds it
    # now (counted for whichever of the two incidents holding it comes first).
    deleted = signer.prune(now=later)
    assert sum(deleted.values()) == 4 and deleted.get(held, 0) >= 3, deleted
    assert not signer.evidence.path_for(shared.sha256).is_file()
