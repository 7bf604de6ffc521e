"""Variants of the shipped playbooks for end-to-end tests."""

from __future__ import annotations

from pathlib import Path

from aisoar.config import PROJECT_ROOT


def spec_variant(tmp_path: Path, gate: str) -> Path:
    """The shipped playbook with another approval gate on its destructive step."""
    text = (PROJECT_ROOT / "playbook_specs/leaked-llm-api-key.yaml").read_text()
    old = """    gate:
      approval:
        approvers: [incident-commander, ml-platform-on-call]
        quorum: 1
        timeout: 4h
        on_timeout: reject
"""
    assert old in text
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "variant.yaml").write_text(text.replace(old, gate))
    return specs
