"""The formats aisoar reads out of the box: the generic alert shape and shipped mappings.

A format is a mapping (``formats/<name>.yaml``, the same language a user's source file
uses) and, for a few senders whose payloads need one derived value a mapping cannot express
(the highest-scoring LLM Guard scanner, say), a small ``prepare`` step that adds it beside
the sender's fields, never removing or rewriting what the sender sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from aisoar.ingress.mapping import Mapping

GENERIC = "generic"


@dataclass(frozen=True)
class Format:
    name: str
    mapping: Mapping | None  # None: the generic alert shape, read as it is
    prepare: Callable[[Any], Any] | None = None
    title: str = ""


def _llm_guard(document: Any) -> Any:
    """The scanner with the highest score, the failed scanners and the direction."""
    if not isinstance(document, dict):
        return document
    scores = document.get("scanners")
    numeric = (
        {str(k): float(v) for k, v in scores.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if isinstance(scores, dict)
        else {}
    )
    derived: dict[str, Any] = {"direction": "output" if "sanitized_output" in document else "prompt"}
    if numeric:
        top = max(numeric, key=lambda name: numeric[name])
        derived |= {
            "top_scanner": top,
            "top_score": f"{numeric[top]:.2f}",
            "failed_scanners": ",".join(sorted(k for k, v in numeric.items() if v > 0))[:1000],
        }
    return {**derived, **document}  # the sender's own fields win


_LITELLM_TYPES = (
    ("jailbreak", "jailbreak"),
    ("injection", "direct_prompt_injection"),
    ("lakera", "direct_prompt_injection"),
    ("pii", "data_leakage"),
    ("presidio", "data_leakage"),
    ("secret", "data_leakage"),
    ("moderation", "abuse_generation"),
    ("toxic", "abuse_generation"),
    ("content", "abuse_generation"),
)


def _litellm(document: Any) -> Any:
    """One guardrail record per payload (the first that blocked), and the type its name suggests."""
    if isinstance(document, list):
        return [_litellm(item) for item in document]
    if not isinstance(document, dict):
        return document
    info = document.get("guardrail_information")
    if isinstance(info, list):
        records = [r for r in info if isinstance(r, dict)]
        blocked = [r for r in records if str(r.get("guardrail_status")) in ("blocked", "guardrail_intervened")]
        info = (blocked or records)[0] if records else None
    if not isinstance(info, dict):
        return document
    name = str(info.get("guardrail_name") or "").lower()
    kind = next((t for word, t in _LITELLM_TYPES if word in name), None)
    prepared = {**document, "guardrail_information": info}
    if kind is not None:
        prepared["guardrail_incident_type"] = kind
    return prepared


_PREPARE: dict[str, Callable[[Any], Any]] = {"llm-guard": _llm_guard, "litellm-guardrail": _litellm}
_TITLES = {
    "generic": "aisoar's generic alert JSON",
    "alertmanager": "Prometheus Alertmanager webhook (version 4)",
    "github-secret-scanning": "GitHub secret scanning alert webhook",
    "ocsf-detection-finding": "OCSF 1.x Detection Finding (class 2004)",
    "llm-guard": "LLM Guard API verdict",
    "litellm-guardrail": "LiteLLM guardrail (standard logging payload)",
}


@cache
def formats() -> dict[str, Format]:
    """Every built-in format by name (the shipped mappings are validated on first use)."""
    found: dict[str, Format] = {GENERIC: Format(GENERIC, None, title=_TITLES[GENERIC])}
    folder = resources.files("aisoar.ingress").joinpath("formats")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            name = entry.name.removesuffix(".yaml")
            mapping = Mapping.model_validate(yaml.safe_load(entry.read_text(encoding="utf-8")))
            found[name] = Format(name, mapping, _PREPARE.get(name), _TITLES.get(name, name))
    return found
