"""Webhook authentication: HMAC-SHA256 over the timestamp and the raw body.

A sender computes ``v1=hex(hmac_sha256(secret, f"{timestamp}.{raw body}"))`` and sends it
in ``X-Aisoar-Signature`` with the Unix time in ``X-Aisoar-Timestamp``. Requests older or
newer than the replay window are refused; the comparison is constant-time. A request
that repeats an accepted signature is a replay: it is acknowledged as a duplicate and
stores nothing new.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

SIGNATURE_HEADER = "X-Aisoar-Signature"
TIMESTAMP_HEADER = "X-Aisoar-Timestamp"
SCHEME = "v1"


class AuthError(Exception):
    """Why a request is not authentic; the message is safe to return to the sender."""


@dataclass(frozen=True)
class Verified:
    timestamp: int
    delivery_id: str  # stable id of this exact signed request, for replay detection


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def signed_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, ts, body), "Content-Type": "application/json"}


def verify(
    secret: str,
    body: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    window_seconds: int,
    now: float | None = None,
) -> Verified:
    if not timestamp_header or not signature_header:
        raise AuthError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    try:
        timestamp = int(timestamp_header)
    except ValueError:
        raise AuthError(f"{TIMESTAMP_HEADER} must be Unix seconds") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > window_seconds:
        raise AuthError(
            f"timestamp is {int(current - timestamp)}s from now, outside the {window_seconds}s window; "
            "sign the request again with the current time"
        )
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature_header.strip().encode()):
        raise AuthError(f"signature does not match; expected {SCHEME}=hex(hmac_sha256(secret, timestamp + '.' + body))")
    return Verified(timestamp=timestamp, delivery_id=hashlib.sha256(signature_header.strip().encode()).hexdigest())
