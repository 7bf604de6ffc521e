"""Reading a webhook body as JSON within limits, before anything else looks at it.

Everything accepted is stored and read back many times (by the dispatcher, by every run
of the incident, by the report), so every limit is applied here, before the 202: a body
that passes reads back from the store and through pydantic and Prefect unchanged.
Errors say what is wrong and where in the structure, never what the sender wrote.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32
MAX_VALUES = 20_000
MAX_STRING = 20_000
MAX_KEY = 256
MAX_INT = 2**63 - 1

_SURROGATE = re.compile(r"[\ud800-\udfff]")


class BodyError(ValueError):
    """The body cannot be accepted; the message is safe to return to the sender."""


def _no_constants(name: str) -> Any:
    raise BodyError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def parse_json(body: bytes) -> Any:
    """The body as JSON, within the limits; raises ``BodyError`` with a sender-safe message."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"the body is not UTF-8 (invalid byte at offset {exc.start})") from None
    try:
        document = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise BodyError(f"the body nests deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise BodyError(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        if isinstance(exc, BodyError):
            raise
        raise BodyError("the body holds a number too large to read") from None
    check(document)
    return document


def check(document: Any) -> None:
    """Apply the structural limits to a parsed document (iteratively: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    values = 0
    while stack:
        value, depth = stack.pop()
        values += 1
        if values > MAX_VALUES:
            raise BodyError(f"the body holds more than {MAX_VALUES} values")
        if isinstance(value, dict | list) and depth > MAX_DEPTH:
            raise BodyError(f"the body nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if len(key) > MAX_KEY:
                    raise BodyError(f"an object key at depth {depth} is longer than {MAX_KEY} characters")
                _check_text(key, depth)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            if len(value) > MAX_STRING:
                raise BodyError(f"a string at depth {depth} is longer than {MAX_STRING} characters")
            _check_text(value, depth)
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int):
            if abs(value) > MAX_INT:
                raise BodyError(f"a number at depth {depth} is outside the 64-bit integer range")
        elif isinstance(value, float) and not math.isfinite(value):
            raise BodyError(f"a number at depth {depth} is too large to be a finite double")


def _check_text(text: str, depth: int) -> None:
    if "\x00" in text:
        raise BodyError(f"a string at depth {depth} holds a NUL character")
    if _SURROGATE.search(text):
        raise BodyError(f"a string at depth {depth} holds an unpaired UTF-16 surrogate (not valid Unicode)")
