"""One-time approval codes: what proves, in the Prefect UI form or the CLI, who is answering.

Each allowed approver gets their own code for one approval request. The store keeps only a
digest bound to the request, the person and the hash of the step's exact arguments, so a
code works once, for that person, for that exact action, until the request expires.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud or typed at 3 a.m.
LENGTH = 12  # ~59 bits
CODE_PATTERN = r"^[A-Za-z0-9 -]{0,40}$"  # what the form takes (formatting characters are ignored)


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, LENGTH, 4))


def normalize(code: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", code.upper())


def digest(approval_id: str, args_sha256: str, person: str, code: str) -> str:
    message = "\x00".join([approval_id, args_sha256, person, normalize(code)]).encode()
    return hashlib.sha256(message).hexdigest()


def matches(expected_digest: str, approval_id: str, args_sha256: str, person: str, code: str) -> bool:
    return hmac.compare_digest(expected_digest, digest(approval_id, args_sha256, person, code))
