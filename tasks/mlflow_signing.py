"""Verify a model version's files against their OpenSSF model signature (the ``model-signing``
package, elliptic-curve keys): the files the MLflow tracking server serves for the version are
downloaded into a private folder, the signature (``model.sig`` among them, by default) is set
apart, and ``model_signing`` checks every file's digest against the signed manifest with the
publisher's public key from the settings (never from the alert). The result, the public key's
fingerprint and the files' digests are kept as evidence: a tampered or unsigned version is
named before a responder approves pinning the known-good one.
"""

from __future__ import annotations

import hashlib
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aisoar.actions import Effect
from connectors.errors import NotConfigured
from connectors.mlflow import SYSTEM as MLFLOW
from connectors.mlflow import MlflowSettings
from tasks.base import ActionContext, StepOutcome, absent, ok
from tasks.mlflow import ModelEvidence
from tasks.registry import action

TITLE = "OpenSSF model signing"


def _check_signature(model_dir: Path, signature: Path, public_key: Path) -> str | None:
    """None when the signature verifies; else why not."""
    try:
        from model_signing import verifying
    except ImportError as exc:  # the optional extra
        raise NotConfigured(TITLE, [f"the model-signing package (pip install 'aisoar[signing]'): {exc}"]) from None
    try:
        verifying.Config().use_elliptic_key_verifier(public_key=public_key).verify(model_dir, signature)  # type: ignore[no-untyped-call]
    except Exception as exc:  # model_signing raises ValueError and others for every kind of mismatch
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
    return None


@action(
    "mlflow.verify_model_signature",
    effect=Effect.read_only,
    inputs=ModelEvidence,
    summary="Verify the model version's files against their OpenSSF model signature with the publisher's public "
    "key (settings), and keep the result and the files' digests as evidence",
    collects_evidence=True,
)
def verify_model_signature(ctx: ActionContext, inputs: ModelEvidence) -> StepOutcome:
    settings: MlflowSettings = MLFLOW.settings_of(ctx.settings)
    if settings.signing_public_key is None:
        raise NotConfigured(TITLE, ["AISOAR_MLFLOW_SIGNING_PUBLIC_KEY (the publisher's PEM public key)"])
    public_key = Path(settings.signing_public_key)
    registry = MLFLOW.client(ctx.settings)
    version = inputs.version or registry.get_alias(inputs.name, inputs.alias)
    record = registry.get_version(inputs.name, version) if version else None
    if record is None:
        return absent(f"MLflow has no version {version or '(none)'} of model {inputs.name}")
    root, note = registry.artifact_root(record)
    if root is None:
        return ok(f"version {version}: {note}; the signature could not be checked", signature_valid=False)
    with tempfile.TemporaryDirectory(prefix="aisoar-model-") as work:
        model_dir = Path(work) / "model"
        model_dir.mkdir()
        files = registry.artifact_digests(root, into=model_dir)
        signature_in = model_dir / settings.signature_file
        signature = Path(work) / "signature"
        signed = signature_in.is_file()
        if signed:
            signature_in.rename(signature)
        problem = _check_signature(model_dir, signature, public_key) if signed else f"no {settings.signature_file}"
        signature_sha256 = hashlib.sha256(signature.read_bytes()).hexdigest() if signed else None
    valid = problem is None and not files["truncated"]
    if files["truncated"]:
        problem = f"not every file was read ({'; '.join(files['truncated_reasons'])})"
    document: dict[str, Any] = {
        "collected_at": datetime.now(UTC).isoformat(),
        "system": "mlflow",
        "model": inputs.name,
        "version": version,
        "signature_file": settings.signature_file,
        "signature_sha256": signature_sha256,
        "public_key_sha256": hashlib.sha256(public_key.read_bytes()).hexdigest(),
        "signature_valid": valid,
        "problem": problem,
        "files": files["files"],
    }
    sha256 = ctx.keep(document, f"Model signature check of {inputs.name} version {version}", asset=inputs.asset)
    if valid:
        return ok(
            f"version {version} of {inputs.name}: signature VALID for its {files['files_digested']} file(s)",
            signature_valid=True,
            version=version,
            evidence_sha256=sha256,
        )
    return ok(
        f"version {version} of {inputs.name}: signature NOT valid ({problem})",
        signature_valid=False,
        version=version,
        problem=problem,
        evidence_sha256=sha256,
    )
