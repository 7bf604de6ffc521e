"""Core models: bounded, typed, and secret-free."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aisoar.ingress.adapters import PayloadError, generic_json
from aisoar.models import LLMApiKey, SecretFingerprint, Severity
from aisoar.secrets import find_secrets
from aisoar.taxonomy import CATALOG, IncidentType, is_atlas_id, is_owasp_llm_id


def test_fingerprint_keeps_no_secret() -> None:
    secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"
    fingerprint = SecretFingerprint.of(secret)
    assert fingerprint.prefix == "sk-pro" and fingerprint.last4 == "0123"
    assert secret not in fingerprint.model_dump_json()


def test_key_entity_correlates_on_provider_id() -> None:
    a = LLMApiKey(provider="openai", key_id="key_1")
    assert a.key == "llm_api_key:openai:key_1"
    with pytest.raises(ValidationError):
        LLMApiKey(provider="openai", gateway_key_hash="not-hex")


def test_severity_order() -> None:
    assert [s.rank for s in Severity] == [0, 1, 2, 3, 4]
    assert max([Severity.low, Severity.critical, Severity.high], key=lambda s: s.rank) is Severity.critical


def test_taxonomy_uses_only_real_atlas_ids_and_pinned_owasp_ids() -> None:
    assert set(CATALOG) == set(IncidentType)
    for info in CATALOG.values():
        assert all(is_atlas_id(i) for i in info.atlas), info
        assert all(is_owasp_llm_id(i) for i in info.owasp), info


def test_secret_shapes_are_found() -> None:
    aws = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    text = "a sk-ant-api03-" + "x" * 30 + f" b SecretAccessKey: {aws} c sk-proj-" + "y" * 30 + " AKIAABCDEFGHIJKLMNOP"
    assert sorted(find_secrets(text)) == sorted(["sk-ant-api03-" + "x" * 30, aws, "sk-proj-" + "y" * 30])


def test_generic_alert_normalisation() -> None:
    body = (
        b'{"id": "a1", "title": "t", "severity": "critical", "labels": {"k": "v"},'
        b'"entities": [{"type": "model", "name": "m", "version": "3"}, {"type": "user", "user_id": "u"}]}'
    )
    alert = generic_json("generic", body)
    assert alert.severity is Severity.critical and [e.type for e in alert.entities] == ["model", "user"]
    again = generic_json("generic", body)
    assert alert.fingerprint == again.fingerprint and alert.id != again.id


def test_unknown_entity_types_are_refused() -> None:
    with pytest.raises(PayloadError) as caught:
        generic_json("generic", b'{"id": "a", "title": "t", "entities": [{"type": "spaceship"}]}')
    assert caught.value.errors[0]["loc"][:2] == ["entities", 0]
