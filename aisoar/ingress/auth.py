"""Webhook authentication, in each sender's own scheme.

- ``aisoar-hmac``: ``X-Aisoar-Signature: v1=hex(hmac_sha256(secret, f"{timestamp}.{raw body}"))``
  with the Unix time in ``X-Aisoar-Timestamp``; requests outside the replay window are refused.
- ``github-hmac``: ``X-Hub-Signature-256: sha256=hex(hmac_sha256(secret, raw body))``; the
  delivery id is ``X-GitHub-Delivery`` (GitHub reuses it on a redelivery).
- ``bearer``: ``Authorization: Bearer <token>`` (Alertmanager's ``http_config.authorization``).
- ``basic``: ``Authorization: Basic base64(user:password)`` (``http_config.basic_auth``).
- ``header``: a static token in a named header (falcosidekick's custom headers, API keys).

Each source may hold two secrets at once (rotation): both are checked, always both, and every
comparison is constant-time. Errors say what is missing or wrong, never the expected value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

SIGNATURE_HEADER = "X-Aisoar-Signature"
TIMESTAMP_HEADER = "X-Aisoar-Timestamp"
GITHUB_SIGNATURE_HEADER = "X-Hub-Signature-256"
GITHUB_DELIVERY_HEADER = "X-GitHub-Delivery"
SCHEME = "v1"


class Scheme(StrEnum):
    aisoar_hmac = "aisoar-hmac"
    github_hmac = "github-hmac"
    bearer = "bearer"
    basic = "basic"
    header = "header"


class AuthError(Exception):
    """Why a request is not authentic; the message is safe to return to the sender."""


@dataclass(frozen=True)
class Verified:
    timestamp: int
    delivery_id: str  # stable id of this exact request, for replay and duplicate detection


@dataclass(frozen=True)
class Credentials:
    """How one source proves itself: a scheme and up to two valid secrets (rotation)."""

    scheme: Scheme
    secrets: tuple[str, ...]
    username: str | None = None  # basic
    header: str | None = None  # header


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, ts, body), "Content-Type": "application/json"}


def sender_headers(credentials: Credentials, body: bytes) -> dict[str, str]:
    """The headers a sender of this source adds to ``body`` (with its first secret)."""
    secret = credentials.secrets[0]
    headers = {"Content-Type": "application/json"}
    match credentials.scheme:
        case Scheme.aisoar_hmac:
            return signed_headers(secret, body)
        case Scheme.github_hmac:
            headers[GITHUB_SIGNATURE_HEADER] = github_signature(secret, body)
        case Scheme.bearer:
            headers["Authorization"] = f"Bearer {secret}"
        case Scheme.basic:
            token = base64.b64encode(f"{credentials.username}:{secret}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        case Scheme.header:
            headers[credentials.header or "X-Aisoar-Token"] = secret
    return headers


def _equal_to_any(given: bytes, expected: list[bytes]) -> bool:
    matched = False
    for candidate in expected:  # always every candidate: the time says nothing about which
        matched |= hmac.compare_digest(given, candidate)
    return matched


def authenticate(
    credentials: Credentials, headers: Mapping[str, str], body: bytes, window_seconds: int, now: float | None = None
) -> Verified:
    """Check a request; ``headers`` are looked up case-insensitively (pass lower-case keys or
    Starlette's headers)."""
    current = time.time() if now is None else now
    body_id = hashlib.sha256(body).hexdigest()
    match credentials.scheme:
        case Scheme.aisoar_hmac:
            return verify_any(
                credentials.secrets,
                body,
                headers.get(TIMESTAMP_HEADER.lower()),
                headers.get(SIGNATURE_HEADER.lower()),
                window_seconds,
                current,
            )
        case Scheme.github_hmac:
            given = headers.get(GITHUB_SIGNATURE_HEADER.lower())
            if not given:
                raise AuthError(f"missing {GITHUB_SIGNATURE_HEADER} header; set the webhook's secret in GitHub")
            expected = [github_signature(s, body).encode() for s in credentials.secrets]
            if not _equal_to_any(given.strip().encode(), expected):
                raise AuthError(f"{GITHUB_SIGNATURE_HEADER} does not match: sha256=hex(hmac_sha256(secret, body))")
            delivery = (headers.get(GITHUB_DELIVERY_HEADER.lower()) or "")[:128]
            return Verified(int(current), f"github:{delivery}" if delivery else body_id)
        case Scheme.bearer:
            given_token = _authorization(headers, "Bearer")
            if not _equal_to_any(given_token.encode(), [s.encode() for s in credentials.secrets]):
                raise AuthError("the bearer token is not valid for this source")
            return Verified(int(current), body_id)
        case Scheme.basic:
            encoded = _authorization(headers, "Basic")
            try:
                user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise AuthError("the Basic credentials are not base64 of user:password") from None
            user_ok = hmac.compare_digest(user.encode(), (credentials.username or "").encode())
            if not (_equal_to_any(password.encode(), [s.encode() for s in credentials.secrets]) and user_ok):
                raise AuthError("the Basic credentials are not valid for this source")
            return Verified(int(current), body_id)
        case Scheme.header:
            name = credentials.header or "X-Aisoar-Token"
            token = headers.get(name.lower())
            if not token:
                raise AuthError(f"missing {name} header")
            if not _equal_to_any(token.strip().encode(), [s.encode() for s in credentials.secrets]):
                raise AuthError(f"the {name} token is not valid for this source")
            return Verified(int(current), body_id)
    raise AuthError("unsupported scheme")  # pragma: no cover - every scheme is matched above


def _authorization(headers: Mapping[str, str], kind: str) -> str:
    value = headers.get("authorization")
    if not value:
        raise AuthError(f"missing Authorization header ({kind})")
    given_kind, _, token = value.strip().partition(" ")
    if given_kind.lower() != kind.lower() or not token.strip():
        raise AuthError(f"the Authorization header must be '{kind} <credentials>'")
    return token.strip()


def verify(
    secret: str,
    body: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    window_seconds: int,
    now: float | None = None,
) -> Verified:
    return verify_any((secret,), body, timestamp_header, signature_header, window_seconds, now)


def verify_any(
    secrets: tuple[str, ...] | list[str],
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
    expected = [sign(secret, timestamp, body).encode() for secret in secrets]
    if not _equal_to_any(signature_header.strip().encode(), expected):
        raise AuthError(f"signature does not match; expected {SCHEME}=hex(hmac_sha256(secret, timestamp + '.' + body))")
    return Verified(timestamp=timestamp, delivery_id=hashlib.sha256(signature_header.strip().encode()).hexdigest())
