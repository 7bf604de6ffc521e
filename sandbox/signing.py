"""OpenSSF model signatures for the sandbox's and the tests' model versions: an elliptic-curve
publisher key made locally (never downloaded), and the ``model.sig`` of a version's files made
with the ``model-signing`` package, as a model publisher's pipeline makes it."""

from __future__ import annotations

import tempfile
from pathlib import Path

SIGNATURE = "model.sig"


def available() -> bool:
    """Whether the `model-signing` package (the extra ``signing``) is installed."""
    try:
        import model_signing  # noqa: F401
    except ImportError:
        return False
    return True


def publisher_keys(folder: Path) -> tuple[Path, Path]:
    """A new P-256 key pair in ``folder``: (private key PEM, public key PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / "publisher.pem", folder / "publisher.pub.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    private.chmod(0o600)
    return private, public


def signed(files: dict[str, bytes], private_key: Path) -> dict[str, bytes]:
    """``files`` (relative path -> content) with their ``model.sig`` added."""
    from model_signing import signing

    with tempfile.TemporaryDirectory(prefix="sandbox-model-") as work:
        model = Path(work) / "model"
        for relative, content in files.items():
            (model / relative).parent.mkdir(parents=True, exist_ok=True)
            (model / relative).write_bytes(content)
        signature = Path(work) / SIGNATURE
        signing.Config().use_elliptic_key_signer(private_key=private_key).sign(model, signature)  # type: ignore[no-untyped-call]
        return {**files, SIGNATURE: signature.read_bytes()}
