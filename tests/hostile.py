"""Hostile inputs and the checks on answers shared by the ingress property tests and the fuzz bench."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from aisoar.config import PROJECT_ROOT
from aisoar.ingress.adapters import KeyEntityIn
from aisoar.ingress.mapping import ENTITY_MODELS
from aisoar.models import Severity
from aisoar.store import Store
from aisoar.taxonomy import IncidentType

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# Texts at the edges of an entity's field: empty, blank, longer once lower-cased ('İ'.lower()
# is two characters), just too long.
BLANKS = ["", " ", "\t\n", "\u0130" * 64, "\u0130" * 128, "x" * 257, "x" * 1025]
# aisoar's own words (severities, incident types, states, entity types, names its formats
# read): a sender may send them, and an answer may hold them for reasons of its own.
AISOAR_WORDS = frozenset(
    {s.value for s in Severity}
    | {t.value for t in IncidentType}
    | {"firing", "resolved", "blocked", "guardrail_intervened", "llm_api_key", "vector_index", "cloud_credential"}
    | {"PromptInjection"}
)


# -- documents ----------------------------------------------------------------------------


def nest(value: Any, depth: int) -> Any:
    """``value`` nested ``depth`` levels deep, in an object and a list by turns."""
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def slots(document: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) below the document's root."""
    found: list[tuple[Any, Any]] = []
    stack = [document]
    while stack:
        value = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
        for key, item in items:
            found.append((value, key))
            stack.append(item)
    return found


def set_path(document: Any, path: str, value: Any) -> Any:
    """The document with ``value`` at the dotted path (containers made on the way)."""
    holder: dict[str, Any] = {"root": document}
    container: Any = holder
    key: Any = "root"
    for segment in path.split("."):
        current = container[key]
        if segment.isdigit():
            if not isinstance(current, list):
                current = container[key] = [] if current is None else [current]
            while len(current) <= int(segment):
                current.append({})
            container, key = current, int(segment)
        else:
            if not isinstance(current, dict):
                current = container[key] = {}
            current.setdefault(segment, None)
            container, key = current, segment
    container[key] = value
    return holder["root"]


def strings_of(value: Any) -> Iterator[str]:
    """Every string of a JSON document: its texts and its keys."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_of(item)


def encode(document: Any) -> bytes:
    """A document as a body, unpaired surrogates and all."""
    return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _entity_model(kind: str) -> type[BaseModel]:
    return KeyEntityIn if kind == "llm_api_key" else ENTITY_MODELS[kind]


def entity_fields(kind: str) -> list[str]:
    """The fields a sender may give an entity of this type (an LLM key with its secret), sorted."""
    return sorted(set(_entity_model(kind).model_fields) - {"type", "fingerprint"})


def required_fields(kind: str) -> set[str]:
    """The fields an entity of this type must have."""
    return {name for name, info in _entity_model(kind).model_fields.items() if info.is_required()}


def unthrottled_sources(folder: Path) -> Path:
    """The shipped source files, with a rate limit no test and no fuzz run reaches."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted((PROJECT_ROOT / "sources").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec["rate_limit_per_minute"] = 1_000_000
        (folder / path.name).write_text(yaml.safe_dump(spec), encoding="utf-8")
    return folder


class Recorder:
    """A launcher that records what it is asked to do (no Prefect); safe across threads."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.launched: list[tuple[str, str]] = []
        self.told: list[tuple[str, str]] = []  # (incident id, message)
        self.lock = threading.Lock()

    def launch(self, incident_id: str, playbook: str) -> str:
        with self.lock:
            self.launched.append((incident_id, playbook))
            run_id = f"run-{len(self.launched)}"
        self.store.set_flow_run(incident_id, playbook, run_id)
        return run_id

    def redrive(self, incident_id: str, playbook: str) -> bool:
        return False

    def tell(self, incident_id: str, message: str) -> None:
        with self.lock:
            self.told.append((incident_id, message))


# -- echoes: an answer must not repeat what the sender wrote ------------------------------

ECHO = 12  # characters
_STRING_LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)


def _grams(text: str) -> set[str]:
    return {text[i : i + ECHO] for i in range(len(text) - ECHO + 1)}


def known_grams(texts: Iterable[str]) -> frozenset[str]:
    """The pieces of these texts, as they are and as JSON writes them, that an answer may hold
    for reasons of its own (aisoar's vocabulary, the example payloads' strings)."""
    return frozenset(
        gram
        for text in texts
        for form in (text, json.dumps(text), json.dumps(text, ensure_ascii=False))
        for gram in _grams(form)
    )


def echoed(body: bytes, answer: str, known: frozenset[str]) -> list[str]:
    """The pieces of ``ECHO`` characters of the strings of the body that the answer repeats
    (but for the ``known`` ones)."""
    grams = _grams(answer) - known
    repeated = []
    for literal in _STRING_LITERAL.findall(body.decode("utf-8", "replace")):
        try:
            value = json.loads(f'"{literal}"')
        except ValueError:
            value = literal
        for form in {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}:
            repeated += [piece for piece in _grams(form) if piece in grams]
    return repeated
