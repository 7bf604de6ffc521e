"""Leaked secrets: each kind is found, replaced by its fingerprint, and gone on a re-scan.

Samples are built here from parts, so the repository holds nothing a push-protection
scanner would take for a real credential.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import uuid
from collections.abc import Callable

import pytest
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.stripe import StripeDetector
from hypothesis import given, settings
from hypothesis import strategies as st

from aisoar.models import SecretFingerprint
from aisoar.secrets import (
    _RULES,
    AWS_SECRET_MIN_ENTROPY,
    _scan,
    find_secrets,
    redact,
    redact_clipped,
    redact_text,
    redaction_marker,
    shannon_entropy,
)
from flows.approvals import REASON_MAX, ApprovalForm, without_secrets

ALNUM = string.ascii_letters + string.digits
_random = random.Random(20261125)


def rnd(n: int, alphabet: str = ALNUM) -> str:
    return "".join(_random.choice(alphabet) for _ in range(n))


def b64url(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def aws_secret() -> str:
    while True:  # a random 40-character key, as AWS issues them
        candidate = rnd(40, ALNUM + "/+")
        if shannon_entropy(candidate) >= AWS_SECRET_MIN_ENTROPY and any(c.isdigit() for c in candidate):
            return candidate


def pem(kind: str = "RSA ", end: bool = True) -> str:
    body = "\n".join(rnd(64, ALNUM + "+/") for _ in range(6)) + "\n" + rnd(40, ALNUM + "+/") + "=="
    block = "-----BEGIN " + kind + "PRIVATE KEY-----\n" + body
    return block + "\n-----END " + kind + "PRIVATE KEY-----" if end else block


def jwt() -> str:
    header = b64url({"alg": "HS256", "typ": "JWT"})
    payload = b64url({"sub": "1234567890", "name": "agent", "iat": 1732500000})
    return f"{header}.{payload}.{rnd(43, ALNUM + '-_')}"


AWS_DOC_EXAMPLE = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"  # AWS's documentation example
SAMPLES: dict[str, Callable[[], str]] = {
    "aws secret access key, unlabelled": aws_secret,
    "aws documentation example key": lambda: AWS_DOC_EXAMPLE,
    "github classic token": lambda: "ghp" + "_" + rnd(36),
    "github oauth token": lambda: "gho" + "_" + rnd(36),
    "github fine-grained pat": lambda: "github" + "_pat_" + rnd(22) + "_" + rnd(59),
    "google api key": lambda: "AI" + "za" + rnd(35, ALNUM + "-_"),
    "pem rsa private key": pem,
    "pem pkcs8 private key": lambda: pem(""),
    "pem encrypted private key": lambda: pem("ENCRYPTED "),
    "openssh private key": lambda: pem("OPENSSH "),
    "stripe live secret key": lambda: "sk" + "_live_" + rnd(24),
    "stripe long live secret key": lambda: "sk" + "_live_" + rnd(99),
    "stripe restricted key": lambda: "rk" + "_live_" + rnd(24),
    "stripe test key": lambda: "sk" + "_test_" + rnd(24),
    "slack webhook url": lambda: (
        "https://hooks.slack.com/services/T" + rnd(10).upper() + "/B" + rnd(10).upper() + "/" + rnd(24)
    ),
    "slack bot token": lambda: "xo" + "xb-" + rnd(12, string.digits) + "-" + rnd(13, string.digits) + "-" + rnd(24),
    "jwt": jwt,
    "anthropic key": lambda: "sk-" + "ant-api03-" + rnd(93, ALNUM + "-_") + "AA",
    "openai project key": lambda: "sk-" + "proj-" + rnd(74, ALNUM + "-_") + "T3Blbk" + "FJ" + rnd(74, ALNUM + "-_"),
    "openai legacy key": lambda: "sk-" + rnd(20) + "T3Blbk" + "FJ" + rnd(20),
    "hugging face token": lambda: "hf" + "_" + rnd(34),
    "gitlab pat": lambda: "glp" + "at-" + rnd(20),
    "sendgrid key": lambda: "SG" + "." + rnd(22) + "." + rnd(43),
    "npm token": lambda: "np" + "m_" + rnd(36),
    "vault service token": lambda: "hv" + "s." + rnd(90, ALNUM + "_-"),
    "vault legacy token": lambda: "s." + rnd(10, string.ascii_lowercase) + "A1" + rnd(12),
}


@pytest.fixture(params=sorted(SAMPLES))
def secret(request: pytest.FixtureRequest) -> str:
    return SAMPLES[request.param]()


def test_each_kind_is_found_replaced_and_fingerprinted(secret: str) -> None:
    text = f"the scanner found {secret} in config/settings.py; rotate it"
    assert find_secrets(text) == [secret]
    found: dict[str, SecretFingerprint] = {}
    out = redact_text(text, found)
    fingerprint = found[secret]
    assert list(found) == [secret]
    assert fingerprint.sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert (fingerprint.prefix, fingerprint.last4) == (secret[:6], secret[-4:])
    assert out == f"the scanner found {redaction_marker(fingerprint)} in config/settings.py; rotate it"
    assert secret not in out and secret[6:-4] not in out
    assert find_secrets(out) == []


def test_each_kind_is_redacted_in_a_document_and_the_dump_rescans_clean(secret: str) -> None:
    document = {"id": "a1", "evidence": {"file": "settings.py", "match": secret}, "lines": [f"KEY={secret}"]}
    found: dict[str, SecretFingerprint] = {}
    out = redact(document, found)
    dumped = json.dumps(out, ensure_ascii=False, separators=(",", ":"))
    assert list(found) == [secret] and secret not in dumped and find_secrets(dumped) == []
    assert out["evidence"]["match"] == redaction_marker(found[secret])


def test_the_library_detectors_agree_nothing_is_left(secret: str) -> None:
    out = redact_text(f"x = '{secret}'\n", {})
    for detector in (
        AWSKeyDetector(),
        GitHubTokenDetector(),
        JwtTokenDetector(),
        PrivateKeyDetector(),
        SlackDetector(),
        StripeDetector(),
    ):
        assert list(detector.analyze_string(out)) == [], type(detector).__name__


def test_a_private_key_block_goes_whole() -> None:
    block = pem()
    text = f"leaked:\n{block}\nend of paste"
    out = redact_text(text, {})
    assert "PRIVATE KEY" not in out and out.startswith("leaked:\n[redacted secret ") and out.endswith("]\nend of paste")
    assert not any(line in out for line in block.splitlines()[1:-1])


def test_a_clipped_private_key_block_goes_to_its_end() -> None:
    block = pem(end=False)
    found: dict[str, SecretFingerprint] = {}
    out = redact_text(f"{block}\n", found)
    assert list(found) == [block] and out == redaction_marker(found[block]) + "\n"


def test_a_jwt_goes_with_its_signature() -> None:
    token = jwt()
    out = redact_text(f"Authorization: Bearer {token};", {})
    assert token.rsplit(".", 1)[1] not in out and out.endswith("];")


def test_a_labelled_aws_secret_is_redacted_and_the_label_stays() -> None:
    for text in (
        f"aws_secret_access_key = {AWS_DOC_EXAMPLE}",
        f'AWS_SECRET_ACCESS_KEY="{AWS_DOC_EXAMPLE}"',
        f"SecretAccessKey: {AWS_DOC_EXAMPLE}",
        "aws_secret_access_key=" + "EXAMPLEKEY" * 3 + "EXAMPL3KEY",  # low entropy: the label decides
    ):
        found: dict[str, SecretFingerprint] = {}
        out = redact_text(text, found)
        (secret,) = found
        assert out.rstrip('"').endswith(redaction_marker(found[secret])) and secret not in out
        assert "ecret" in out.split("[")[0].lower() and find_secrets(out) == []


def test_a_label_in_a_key_and_the_secret_in_its_value() -> None:
    low_entropy = "EXAMPLEKEY" * 3 + "EXAMPL3KEY"
    document = {
        "aws": {"aws_secret_access_key": low_entropy, "aws_access_key_id": "AKIA" + "ABCDEFGHIJKLMNOP"},
        "env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": AWS_DOC_EXAMPLE}],
    }
    found: dict[str, SecretFingerprint] = {}
    out = redact(document, found)
    dumped = json.dumps(out, separators=(",", ":"))
    assert set(found) == {low_entropy, AWS_DOC_EXAMPLE} and find_secrets(dumped) == []
    assert out["aws"]["aws_access_key_id"] == "AKIA" + "ABCDEFGHIJKLMNOP"


def test_a_secret_found_in_one_string_goes_from_every_other() -> None:
    key = aws_secret()
    document = {"leak": key, "url": f"https://s3.example.com/keys/{key}", "note": f"0{key}"}
    assert find_secrets(document["url"]) == find_secrets(document["note"]) == []  # no pattern sees them there
    found: dict[str, SecretFingerprint] = {}
    out = redact(document, found)
    assert list(found) == [key] and key not in json.dumps(out)
    assert out["url"] == "https://s3.example.com/keys/" + redaction_marker(found[key])


def test_the_generic_alert_with_a_labelled_aws_secret_is_stored_not_refused() -> None:
    from aisoar.ingress.adapters import generic_alert

    document = {
        "id": "scan-1",
        "title": f"aws_secret_access_key = {AWS_DOC_EXAMPLE}",
        "description": "AKIA" + "ABCDEFGHIJKLMNOP",
        "config": {"aws_secret_access_key": AWS_DOC_EXAMPLE},
    }
    alert = generic_alert("scanner", document, json.dumps(document).encode())
    stored = alert.model_dump_json()
    assert AWS_DOC_EXAMPLE not in stored and "AKIA" + "ABCDEFGHIJKLMNOP" in stored
    assert find_secrets(stored) == []


NOT_SECRETS = [
    hashlib.sha256(b"evidence").hexdigest(),
    "sha256:" + hashlib.sha256(b"x").hexdigest(),
    redaction_marker(SecretFingerprint.of(AWS_DOC_EXAMPLE)),
    redaction_marker(SecretFingerprint.of("short")),
    "AKIA" + "ABCDEFGHIJKLMNOP",
    "ASIA" + "QWERTYUIOPASDFGH and AKIA" + "ZXCVBNMLKJHGFDSA",
    str(uuid.UUID(int=0x1234567890ABCDEF1234567890ABCDEF)),
    str(uuid.uuid5(uuid.NAMESPACE_URL, "https://example.com")),
    hashlib.sha1(b"commit", usedforsecurity=False).hexdigest(),
    "commit " + hashlib.sha1(b"commit", usedforsecurity=False).hexdigest().upper() + " merged",
    "The gateway reported 1,873 USD of spend in six hours from addresses it had never seen before.",
    "Rotate the key, then revoke the old one; risk-assessment-for-the-production-deployment follows.",
    "https://github.com/acme/chatbot-demo/blob/main/config/settings.py#L42",
    "https://api.openai.com/v1/organization/projects/proj_abc123/api_keys?limit=20&after=key_xyz",
    "https://host.example.com:8443?email=alice@example.com",
    "ssh://git@github.com:acme/chatbot-demo.git",
    "2026-11-25T10:42:17.123456+00:00",
    "gpt-4o-2024-08-06 claude-3-5-sonnet-20241022 meta-llama/Meta-Llama-3.1-405B-Instruct",
    "text-embedding-3-large sentence-transformers/all-MiniLM-L6-v2",
    base64.b64encode(b"hello").decode(),
    base64.b64encode(b"the quick brown fox jumps ov").decode(),
    base64.b64encode(b"an ordinary sentence of thirty").decode(),  # 40 characters, decodes to text
    "ThisIsAVeryLongCamelCaseIdentifierName12",
    "/Users/alice/Projects/chatbot2/src/components",
    "x" * 40,
    "Ab1" * 13 + "A",
    "0123456789" * 4,
    "arn:aws:iam::123456789012:user/deploy-bot",
    "ALR-20261125-0a1b2c3d4e5f INC-20261125-0042",
    "eyJ is how a JWT starts; eyJhbGciOi.notjson.sig is not one",
    "-----BEGIN PUBLIC KEY----- is fine, and so is -----BEGIN CERTIFICATE-----",
    "sk-this-is-not-a-key-at-all",
    "s.never-print-this-token and config.settings.DatabaseConnectionPool",
]


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_what_is_not_a_secret_is_kept(text: str) -> None:
    assert find_secrets(text) == []
    assert redact_text(text, {}) == text


def test_entropy_is_detect_secrets_own() -> None:
    library = Base64HighEntropyString()
    for value in [AWS_DOC_EXAMPLE, aws_secret(), "x" * 40, "Ab1" * 13 + "A", rnd(40, ALNUM + "+/=-_")]:
        assert shannon_entropy(value) == pytest.approx(library.calculate_shannon_entropy(value))


def test_redact_clipped_keeps_the_limit_and_never_cuts_a_marker() -> None:
    token = SAMPLES["github classic token"]()
    text = "a" * 30 + " " + token + " tail"
    for limit in range(1, 120):
        found: dict[str, SecretFingerprint] = {}
        out = redact_clipped(text, found, limit)
        assert len(out) <= limit and token not in out and token[6:-4] not in out
        marker = redaction_marker(SecretFingerprint.of(token))
        assert (marker in out) == (limit > 31 + len(marker))  # whole, or not at all
        assert "[redacted" not in out.replace(marker, "")  # no half marker
        assert find_secrets(out) == []
    assert redact_clipped("short", {}, 10) == "short"
    assert redact_clipped("a" * 20, {}, 10) == "a" * 9 + "…"


def test_a_clip_that_leaves_a_key_standing_alone_is_redacted_again() -> None:
    # 40 key characters followed by one more: not a key's shape until the clip cuts the 41st.
    key = aws_secret()
    text = key + "Z tail"
    assert find_secrets(text) == []
    out = redact_clipped(text, {}, 41)
    assert key not in out and len(out) <= 41 and find_secrets(out) == []


def test_the_approval_form_keeps_only_fingerprints() -> None:
    token = SAMPLES["github classic token"]()
    answer = {"decision": "approve", "code": "ABCD-EFGH-JKMN", "reason": "x" * 1990 + " " + token}
    clean = without_secrets(answer)
    form = ApprovalForm(**clean)
    assert form.decision == "approve" and token not in form.reason
    assert len(form.reason) <= REASON_MAX
    short = without_secrets({"decision": "reject", "code": "ABCD-EFGH-JKMN", "reason": f"leaked {token} here"})
    assert short["reason"] == f"leaked {redaction_marker(SecretFingerprint.of(token))} here"
    assert without_secrets({"decision": "reject", "code": "ABCD-EFGH-JKMN", "reason": "no"}) == {
        "decision": "reject",
        "code": "ABCD-EFGH-JKMN",
        "reason": "no",
    }


# Property: whatever the text, nothing found stays and a re-scan finds nothing.
_FRAGMENTS = [
    "sk-",
    "sk-ant-api03-",
    "ghp_",
    "github_pat_",
    "hf_",
    "AIza",
    "xoxb-",
    "sk_live_",
    "eyJ",
    ".",
    "-----BEGIN RSA PRIVATE KEY-----\n",
    "-----END RSA PRIVATE KEY-----",
    "aws_secret_access_key=",
    "https://hooks.slack.com/services/T",
    "https://user:",
    "@",
    "[redacted secret ",
    "]",
    "…",
    " ",
    "\n",
    AWS_DOC_EXAMPLE,
]
_pieces = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=ALNUM + "/+-_=", min_size=1, max_size=60),
    st.sampled_from(_FRAGMENTS),
    st.sampled_from(sorted(SAMPLES)).map(lambda kind: SAMPLES[kind]()),
)
texts = st.lists(_pieces, max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(texts)
def test_redaction_leaves_no_secret_whatever_the_text(text: str) -> None:
    found: dict[str, SecretFingerprint] = {}
    out = redact_text(text, found)
    assert all(secret not in out for secret in found)
    assert set(find_secrets(text)) <= set(found)
    assert find_secrets(out) == []
    assert redact_text(out, {}) == out


@settings(max_examples=100, deadline=None)
@given(texts, st.integers(min_value=1, max_value=300))
def test_clipped_redaction_leaves_no_secret_whatever_the_text(text: str, limit: int) -> None:
    found: dict[str, SecretFingerprint] = {}
    out = redact_clipped(text, found, limit)
    assert len(out) <= limit
    assert all(secret not in out for secret in found)
    assert find_secrets(out) == []


# The rules' needles and gates (cheap tests that let a rule run only where it can match) must
# never skip a rule that would have found something: the scan with them finds what running every
# pattern of every rule on the whole text finds.
def _telegram() -> str:
    return rnd(9, string.digits) + ":" + rnd(35, ALNUM + "_-")


def _discord() -> str:
    return "M" + rnd(23, ALNUM + "_-") + "." + rnd(6, ALNUM + "_-") + "." + rnd(27, ALNUM + "_-")


def _mailchimp() -> str:
    return rnd(32, string.digits + "abcdef") + "-us" + rnd(2, string.digits)


_GATED = [_telegram, _discord, _mailchimp, aws_secret, SAMPLES["vault legacy token"], SAMPLES["anthropic key"]]
_gate_pieces = st.one_of(
    _pieces,
    st.sampled_from(range(len(_GATED))).map(lambda i: _GATED[i]()),
    st.sampled_from(["=", "_", "-", "/", "+", ":", ".", "é", "…", "\x00", "sk-", "hf_", "s.", "b.", "-us"]),
    st.text(alphabet=ALNUM + "/+", min_size=38, max_size=42),
)
gate_texts = st.lists(_gate_pieces, max_size=12).map("".join)


@settings(max_examples=600, deadline=None)
@given(gate_texts)
def test_needles_and_gates_never_skip_a_rule_that_would_match(text: str) -> None:
    assert _scan(text) == _scan(text, _RULES)


@pytest.mark.parametrize(
    "text",
    [
        "id " + AWS_DOC_EXAMPLE + " end",  # a run of exactly 40: the unlabelled AWS shape
        "key=" + AWS_DOC_EXAMPLE,  # "=" may precede it
        AWS_DOC_EXAMPLE + "=",  # but not follow it
        "é" + AWS_DOC_EXAMPLE + "é",  # non-ASCII neighbours
        "x" + AWS_DOC_EXAMPLE,  # 41 characters: not a key
        "bot " + "123456789:" + "AbC" * 12,
        "M" + "a1" * 12 + ".abc123." + "Z9" * 14,
        "f" * 32 + "-us12",
    ],
)
def test_the_gated_rules_find_what_their_patterns_find(text: str) -> None:
    assert _scan(text) == _scan(text, _RULES)
