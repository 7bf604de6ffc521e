"""Sandboxed templating of step inputs.

Step inputs in a playbook spec are Jinja expressions over the alert, the incident and
earlier steps' outputs, rendered in a sandbox. Alert text is data: a value that itself
looks like a template (``{{ 7*7 }}``, ``{% for %}``) is inserted as it is and never
rendered, because the engine renders only the spec's own template text, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

_env = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    keep_trailing_newline=False,
)


class TemplateProblem(ValueError):
    """A spec template that cannot be parsed or rendered; the message says why."""


@lru_cache(maxsize=1024)
def _compile(source: str) -> Any:
    try:
        return _env.from_string(source)
    except TemplateError as exc:
        raise TemplateProblem(f"template {source!r} does not parse: {exc}") from exc


def referenced_roots(source: str) -> set[str]:
    """Top-level names a template reads (``alert``, ``incident``, ``steps`` ...)."""
    try:
        tree = _env.parse(source)
    except TemplateError as exc:
        raise TemplateProblem(f"template {source!r} does not parse: {exc}") from exc
    return {node.name for node in tree.find_all(nodes.Name) if node.ctx == "load"}


def referenced_steps(source: str) -> set[str]:
    """Step ids a template reads through ``steps.<id>`` or ``steps['<id>']``."""
    tree = _env.parse(source)
    found: set[str] = set()
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == "steps":
            found.add(node.attr)
    for item in tree.find_all(nodes.Getitem):
        if (
            isinstance(item.node, nodes.Name)
            and item.node.name == "steps"
            and isinstance(item.arg, nodes.Const)
            and isinstance(item.arg.value, str)
        ):
            found.add(item.arg.value)
    return found


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render one template string in the sandbox."""
    try:
        return str(_compile(source).render(**context))
    except TemplateProblem:
        raise
    except TemplateError as exc:
        raise TemplateProblem(f"template {source!r} failed: {exc}") from exc


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside a JSON-like value (dicts, lists, scalars)."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, Mapping):
        return {str(k): render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value


@lru_cache(maxsize=1024)
def _expression(source: str) -> Any:
    """A condition compiled once (compiling costs a millisecond or more; a burst evaluates the
    same few conditions thousands of times)."""
    return _env.compile_expression(source, undefined_to_none=True)


def evaluate_value(source: str, context: Mapping[str, Any]) -> Any:
    """A decision's expression: its value (None where it reads something undefined)."""
    try:
        return _expression(source)(**context)
    except TemplateError as exc:
        raise TemplateProblem(f"expression {source!r} failed: {exc}") from exc


def evaluate_condition(source: str, context: Mapping[str, Any]) -> bool:
    """A step condition is a Jinja expression; true unless it renders falsy."""
    try:
        return bool(_expression(source)(**context))
    except TemplateError as exc:
        raise TemplateProblem(f"condition {source!r} failed: {exc}") from exc
