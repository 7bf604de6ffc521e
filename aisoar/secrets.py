"""Finding leaked secrets in alert payloads and replacing them with fingerprints.

A secret-scanning alert carries the very key that leaked. It is fingerprinted at the
edge (sha256, first six and last four characters) and the clear value is dropped before
anything is stored, logged or shown.
"""

from __future__ import annotations

import re
from typing import Any

from aisoar.models import SecretFingerprint

# Well-known LLM / cloud credential shapes. Order matters: the most specific first.
SECRET_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"sk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_\-]{20,}"),
    re.compile(r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{20,}"),
    re.compile(r"sk-[A-Za-z0-9_\-]{20,}"),
    # An AWS access key id (AKIA...) is an identifier, not a secret (IAM lists it, containment
    # needs it); its secret access key is 40 base64 characters, recognisable only by its label.
    re.compile(
        r"(?:aws_?secret_?access_?key|secret_?access_?key)[\"'\s:=]{1,4}(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
        re.IGNORECASE,
    ),
    re.compile(r"xox[abposr]-[A-Za-z0-9\-]{10,}"),
    re.compile(r"gh[pousr]_[A-Za-z0-9]{36,}"),
    re.compile(r"hf_[A-Za-z0-9]{30,}"),
)


def redaction_marker(fingerprint: SecretFingerprint) -> str:
    return f"[redacted secret {fingerprint.prefix}…{fingerprint.last4} sha256:{fingerprint.sha256[:16]}]"


def find_secrets(text: str) -> list[str]:
    found: list[str] = []
    for pattern in SECRET_PATTERNS:
        for match in pattern.finditer(text):
            value = match.groupdict().get("secret") or match.group(0)
            if not any(value in seen for seen in found):
                found.append(value)
    return found


def redact_text(text: str, found: dict[str, SecretFingerprint]) -> str:
    for secret in find_secrets(text):
        fingerprint = found.setdefault(secret, SecretFingerprint.of(secret))
        text = text.replace(secret, redaction_marker(fingerprint))
    return text


def redact(value: Any, found: dict[str, SecretFingerprint]) -> Any:
    """Return ``value`` with every secret replaced; ``found`` collects fingerprints.

    ``found`` maps each clear secret to its fingerprint so the caller can build
    entities; it must be dropped as soon as that is done.
    """
    if isinstance(value, str):
        return redact_text(value, found)
    if isinstance(value, dict):
        return {redact_text(str(k), found): redact(v, found) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, found) for v in value]
    return value
