"""Variants of the shipped playbooks for end-to-end tests."""

from __future__ import annotations

import re
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


def with_approval_timeout(tmp_path: Path, spec_file: str, timeout: str) -> Path:
    """A directory holding the shipped spec ``spec_file`` with every approval's timeout set to ``timeout``."""
    text = (PROJECT_ROOT / "playbook_specs" / spec_file).read_text()
    changed = re.sub(r"(\n\s+timeout: )\S+", rf"\g<1>{timeout}", text)
    assert changed != text, f"{spec_file} has no approval timeout to change"
    specs = tmp_path / "specs-timeout"
    specs.mkdir()
    (specs / spec_file).write_text(changed)
    return specs
