"""Reading docs/connectors.md in tests: the documented policies are the ones tests grant."""

from __future__ import annotations

from aisoar.config import PROJECT_ROOT

CONNECTORS_DOC = PROJECT_ROOT / "docs" / "connectors.md"


def connector_section(heading_start: str) -> str:
    """The ``## `` section of docs/connectors.md whose heading starts with ``heading_start``."""
    text = CONNECTORS_DOC.read_text()
    for section in text.split("\n## ")[1:]:
        if section.startswith(heading_start):
            return section
    raise AssertionError(f"docs/connectors.md has no section '## {heading_start}...'")
