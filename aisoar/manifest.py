"""Evidence anyone can verify: an incident's signed evidence manifest, its portable bundle,
and the checks that say exactly which item fails.

The manifest lists every evidence item of an incident in custody order: the sha256 and size of
its bytes, what it is, who collected it (the playbook step), when, where it was kept, the run
of the step, and its custody entry with the entry's place in the incident's hash chain (each
entry's hash covers the previous one). The whole manifest is signed with the installation's
Ed25519 key (``cryptography``); its public key, and the key's id, are in the manifest and in
the incident's report, so an auditor compares the id with the one they were given.

A bundle (``aisoar export``) is a tar.gz of ``manifest.json``, ``evidence/<sha256>`` for each
item, ``report.md`` and ``signing-key.pub``. ``verify_bundle`` reads it without extracting
anything to disk (its names are never used as paths) and re-hashes every file, recomputes the
chain and checks the signature.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import secrets
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aisoar.store.evidence import GENESIS, INCIDENT_CHAIN, EvidenceRecord, custody_hash

FORMAT = "aisoar-evidence-manifest/1"
KEY_FILE = "evidence-signing-key.pem"  # in the data directory, made by `aisoar up` / `serve`
MAX_ITEM_BYTES = 512 * 1024 * 1024  # a bundle member larger than this is refused, not read


class ManifestError(ValueError):
    """A manifest or bundle that cannot be read at all (not one that fails a check)."""


# -- the key --------------------------------------------------------------------------------
def key_path(data_dir: Path) -> Path:
    return data_dir / KEY_FILE


def ensure_signing_key(data_dir: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The installation's signing key, made (owner-only, 0600) the first time; whether it was made."""
    path = key_path(data_dir)
    if path.exists():
        return load_signing_key(path), False
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # Written whole under a name of its own, then linked in place (a link never replaces a file):
    # replicas starting at once on a shared data directory make one key, and none reads a key
    # another is still writing.
    draft = _written(data_dir, pem, 0o600)
    try:
        os.link(draft, path)
    except FileExistsError:  # another process made it first: use theirs
        return load_signing_key(path), False
    finally:
        draft.unlink()
    os.replace(_written(data_dir, public_pem(key.public_key()).encode(), 0o644), public_path(data_dir))
    return key, True


def _written(folder: Path, content: bytes, mode: int) -> Path:
    """A new file of ``folder``, under a name no other process uses, holding ``content`` (synced)."""
    draft = folder / f".draft-{secrets.token_hex(8)}"
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    return draft


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ManifestError(f"{path} is not an Ed25519 private key")
    return key


def public_path(data_dir: Path) -> Path:
    return data_dir / "evidence-signing-key.pub"


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(text: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(text.encode())
    except ValueError as exc:
        raise ManifestError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ManifestError("the public key is not an Ed25519 key")
    return key


def key_id(key: Ed25519PublicKey) -> str:
    """A short name of the public key: the first 16 hex digits of the sha256 of its raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# -- the manifest ---------------------------------------------------------------------------
def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _when(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()  # as the custody hash reads it


def block_size(size: int) -> int:
    """The size of the blocks an item's bytes are hashed by (at most 1,024 blocks, at least 1 KiB
    each), so a changed byte is found to its block."""
    block = 1024
    while size > block * 1024:
        block *= 2
    return block


def block_hashes(content: bytes) -> list[str]:
    size = block_size(len(content))
    return [hashlib.sha256(content[at : at + size]).hexdigest()[:16] for at in range(0, len(content), size)]


def _item(number: int, record: EvidenceRecord, content: bytes) -> dict[str, Any]:
    custody = record.custody_entry()
    custody["collected_at"] = _when(record.collected_at)
    step = record.collected_by.removeprefix("aisoar:")
    return {
        "n": number,
        "sha256": record.sha256,
        "size": record.size,
        "media_type": record.media_type,
        "what": record.description,
        "who": record.collected_by,
        "when": _when(record.collected_at),
        "where": record.location,
        "asset": record.asset,
        "step": step if "/" in step else None,
        "flow_run_id": record.flow_run_id,
        "file": f"evidence/{record.sha256}",
        "block_size": block_size(len(content)),
        "blocks": block_hashes(content),
        "custody": custody,
        "prev_hash": record.prev_hash,
        "entry_hash": record.entry_hash,
    }


def build_manifest(
    incident: dict[str, Any],
    records: list[EvidenceRecord],
    read: Callable[[EvidenceRecord], bytes | None],
    key: Ed25519PrivateKey,
    now: datetime,
) -> dict[str, Any]:
    """The signed manifest of ``records`` (an incident's evidence, in custody order), whose bytes
    ``read`` gives. Evidence whose bytes no longer match their custody entry is not signed: the
    error names each such item."""
    items, broken = [], []
    for number, record in enumerate(records, 1):
        content = read(record)
        if content is None or hashlib.sha256(content).hexdigest() != record.sha256:
            why = (
                "its file is missing" if content is None else "its file no longer hashes to its custody entry's sha256"
            )
            broken.append(f"item {number} (sha256 {record.sha256[:12]}…, {record.description[:60]!r}): {why}")
            continue
        items.append(_item(number, record, content))
    if broken:
        raise ManifestError("not signed: " + "; ".join(broken))
    public = key.public_key()
    body: dict[str, Any] = {
        "format": FORMAT,
        "incident": incident,
        "created_at": _when(now),
        "items": items,
        "chain_head": records[-1].entry_hash if records else GENESIS,
        "signing_key": {"algorithm": "Ed25519", "id": key_id(public), "public_key_pem": public_pem(public)},
    }
    signature = key.sign(_canonical(body))
    return {**body, "signature": base64.b64encode(signature).decode()}


# -- checks ---------------------------------------------------------------------------------
@dataclass
class Verification:
    """What the checks found: ``problems`` names each item or part that fails; empty: intact."""

    items: int = 0
    key_id: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _label(item: dict[str, Any]) -> str:
    what = str(item.get("what") or "")[:60]
    return f"item {item.get('n')} (sha256 {str(item.get('sha256'))[:12]}…, {what!r})"


def verify_manifest(
    manifest: Any,
    read_file: Callable[[dict[str, Any]], bytes | None],
    pinned: Ed25519PublicKey | None = None,
) -> Verification:
    """Check the signature (against ``pinned`` when given, else the manifest's own key, which
    only proves integrity: compare its id with the one you were given), the hash chain, and
    each item's bytes (``read_file`` gives them, or None when missing)."""
    result = Verification()
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ManifestError(f"not an aisoar evidence manifest (its `format` must be {FORMAT!r})")
    items = manifest.get("items")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ManifestError("the manifest's `items` is not a list of items")
    result.items = len(items)
    body = {k: v for k, v in manifest.items() if k != "signature"}
    try:
        embedded = load_public_key(str((manifest.get("signing_key") or {}).get("public_key_pem") or ""))
    except ManifestError as exc:
        embedded = None
        result.problems.append(f"the manifest's signing key cannot be read: {exc}")
    key = pinned or embedded
    if key is not None:
        result.key_id = key_id(key)
        if pinned is not None and embedded is not None and key_id(embedded) != key_id(pinned):
            result.problems.append(f"signed with key {key_id(embedded)}, not with the key you gave ({key_id(pinned)})")
        try:
            key.verify(base64.b64decode(str(manifest.get("signature") or ""), validate=True), _canonical(body))
        except (InvalidSignature, ValueError):
            result.problems.append(
                f"the signature does not match the manifest (key {result.key_id}): the manifest was changed after "
                "it was signed, or another key signed it"
            )
    if pinned is None and key is not None:
        result.notes.append(f"signed by key {result.key_id}: compare it with the key id in the incident's report")
    previous: str | None = None
    for item in items:
        previous = _check_item(item, previous, read_file, result)
    head = items[-1].get("entry_hash") if items else GENESIS
    if manifest.get("chain_head") != head:
        result.problems.append("the manifest's chain_head is not the last item's custody entry hash")
    return result


def _check_item(
    item: dict[str, Any],
    previous: str | None,
    read_file: Callable[[dict[str, Any]], bytes | None],
    result: Verification,
) -> str | None:
    label = _label(item)
    custody = item.get("custody")
    if not isinstance(custody, dict):
        result.problems.append(f"{label}: it has no custody entry")
        return previous
    prev_hash, entry_hash = str(item.get("prev_hash")), str(item.get("entry_hash"))
    if custody_hash(prev_hash, custody) != entry_hash:
        result.problems.append(f"{label}: its custody entry does not hash to its entry hash (the entry was changed)")
    in_chain = custody.get("chain") == INCIDENT_CHAIN
    if in_chain and prev_hash != (previous or GENESIS):
        result.problems.append(
            f"{label}: its previous hash is not the hash of the entry before it (the chain is broken)"
        )
    for name in ("sha256", "size"):
        if custody.get(name) != item.get(name):
            result.problems.append(f"{label}: its {name} differs from its custody entry's")
    content = read_file(item)
    if content is None:
        result.problems.append(f"{label}: its file is missing")
    else:
        actual = hashlib.sha256(content).hexdigest()
        if actual != custody.get("sha256"):
            where = _changed_blocks(item, content)
            result.problems.append(
                f"{label}: its bytes hash to {actual[:12]}…, not {str(custody.get('sha256'))[:12]}…; {where}"
            )
    return entry_hash if in_chain else previous


def _changed_blocks(item: dict[str, Any], content: bytes) -> str:
    """Where the bytes differ from those the manifest hashed: the byte ranges of the changed blocks."""
    size, expected = item.get("block_size"), item.get("blocks")
    if len(content) != item.get("size"):
        length = f"it is {len(content)} bytes, not {item.get('size')}"
    else:
        length = ""
    if not isinstance(size, int) or size <= 0 or not isinstance(expected, list):
        return length or "the manifest has no block hashes to say where"
    actual = [hashlib.sha256(content[at : at + size]).hexdigest()[:16] for at in range(0, len(content), size)]
    changed = [
        n
        for n in range(max(len(actual), len(expected)))
        if n >= len(actual) or n >= len(expected) or actual[n] != expected[n]
    ]
    ranges = ", ".join(
        f"{n * size}-{min((n + 1) * size, max(len(content), int(item.get('size') or 0))) - 1}" for n in changed[:5]
    )
    more = f" and {len(changed) - 5} more blocks" if len(changed) > 5 else ""
    where = f"changed bytes in {ranges}{more} (blocks of {size})"
    return f"{length}; {where}" if length else where


# -- bundles --------------------------------------------------------------------------------
def write_bundle(
    target: Path,
    manifest: dict[str, Any],
    files: Iterable[tuple[str, Path]],
    report: str,
    public_key: str,
    formats: dict[str, bytes] | None = None,
) -> None:
    """A tar.gz of the manifest, the evidence files (``evidence/<sha256>``), the report (and its
    other ``formats``) and the public key; written beside ``target`` and moved in place when complete."""
    partial = target.with_name(target.name + ".partial")
    with tarfile.open(partial, "w:gz") as bundle:
        _add(bundle, "manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
        _add(bundle, "report.md", report.encode())
        for name, content in sorted((formats or {}).items()):
            _add(bundle, name, content)
        _add(bundle, "signing-key.pub", public_key.encode())
        for name, path in files:
            _add(bundle, name, path.read_bytes())
    partial.replace(target)


def _add(bundle: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    info.mode = 0o444
    bundle.addfile(info, io.BytesIO(content))


def read_bundle(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The bundle's manifest and its other regular files by name, read in memory."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as bundle:
            for member in bundle.getmembers():
                if not member.isfile():
                    continue  # links, devices, directories: never followed
                if member.size > MAX_ITEM_BYTES:
                    raise ManifestError(f"{member.name[:80]!r} is larger than {MAX_ITEM_BYTES} bytes")
                handle = bundle.extractfile(member)
                if handle is not None:
                    files[member.name] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ManifestError(f"{path} is not a readable bundle (tar.gz): {exc}") from None
    if "manifest.json" not in files:
        raise ManifestError(f"{path} holds no manifest.json")
    try:
        manifest = json.loads(files.pop("manifest.json"))
    except ValueError as exc:
        raise ManifestError(f"the bundle's manifest.json is not JSON: {exc}") from None
    return manifest, files


def verify_bundle(path: Path, pinned: Ed25519PublicKey | None = None) -> Verification:
    manifest, files = read_bundle(path)
    return verify_manifest(manifest, lambda item: files.get(str(item.get("file"))), pinned)
