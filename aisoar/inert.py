"""Rendering attacker-controlled text inert for each place it is shown.

Alert text may carry the attack itself: Slack mentions (``<!channel>``), disguised links
(``<http://evil|docs>``), Jira wiki macros, markdown links or HTML. Each function here
returns text that the target shows literally.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def clip(text: str, limit: int) -> str:
    text = _CONTROL.sub("", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_text(text: str, limit: int = 2900) -> str:
    """Slack mrkdwn: escape the three control characters Slack defines (& < >).

    With them escaped, ``<!channel>``, ``<@U123>`` and ``<http://x|y>`` are shown as
    typed and never notify or link. Use together with ``"verbatim": true`` so Slack does
    not auto-link bare URLs or channel names either.
    """
    escaped = clip(text, limit).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # Stop *bold* / `code` / ~strike~ from reshaping the message around the text.
    return re.sub(r"([*_~`])", "\u200b\\1\u200b", escaped)


_JIRA_SPECIAL = re.compile(r"([{}\[\]|*_+\-^~?#!\\])")


def jira_text(text: str, limit: int = 30000) -> str:
    """Jira wiki markup: backslash-escape every markup character, drop macros."""
    return _JIRA_SPECIAL.sub(r"\\\1", clip(text, limit))


def jira_summary(text: str) -> str:
    """Jira summary: one line, at most 255 characters."""
    return clip(" ".join(text.split()), 255)


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def markdown_text(text: str, limit: int = 10000) -> str:
    """Markdown (Prefect UI forms and artifacts): escape markup and HTML."""
    text = clip(text, limit)
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return " ".join(text.split())
