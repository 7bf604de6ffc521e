"""Rendering attacker-controlled text inert for each place it is shown.

Alert text may carry the attack itself: Slack mentions (``<!channel>``), disguised links
(``<http://evil|docs>``), Jira wiki macros, markdown links or HTML, forged lines, hidden
characters. Each renderer here (``slack_text``, ``jira_text``, ``markdown_text``,
``plain_text``) returns text that its target shows literally, and:

* on **one line**: every line break (``\\n``, ``\\r``, VT, FF, NEL, U+2028, U+2029) is shown
  as `` ⏎ ``, so the text can never start a line of its own (a forged "approved by" line, a
  Jira ``h1.``/``bq.``, the Jira timeline marker);
* with **hidden characters shown**: control characters, zero-width and bidi controls, tag
  characters and other invisible format characters are replaced by a visible ``⟨U+202E⟩``,
  never silently dropped, so a responder sees that something was hidden;
* **defanged** the way security teams do, so no renderer (nor a client's auto-linker) can
  make a live link: ``hxxps://``, ``evil[.]example`` (also ``%2E``), ``user[@]evil[.]example``,
  ``javascript[:]``.

The ``*_quote`` functions add a visible label and quotes around alert-derived text:
``_from the alert (untrusted):_ “…”``. Use them for alert titles, descriptions, labels and
entity names; aisoar's own text (step titles, outcome lines) stays unlabelled.
"""

from __future__ import annotations

import re

LINE_BREAK_MARK = " \u23ce "  # " ⏎ "
UNTRUSTED_LABEL = "from the alert (untrusted):"
_OPEN, _CLOSE = "\u201c", "\u201d"  # “ ”

_LINE_BREAKS = re.compile(r"\r\n|[\n\r\x0b\x0c\x85\u2028\u2029]")
# Invisible or reordering characters: C0/C1 controls (but tab and the line breaks), DEL,
# every Unicode format character (Cf: zero-width, bidi, tags, ...), lone surrogates, and the
# invisible fillers and variation selectors that are not Cf (Hangul fillers, Khmer inherent
# vowels, Mongolian selectors, CGJ; the variation selectors used to smuggle bytes).
# tests/test_inert.py checks the list against unicodedata.
_HIDDEN = re.compile(
    "["
    "\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f"
    "\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    "\u115f\u1160\u17b4\u17b5\u180b-\u180f"
    "\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f"
    "\u3164\ud800-\udfff\ufe00-\ufe0d\ufeff\uffa0\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f\U000e0100-\U000e01ef"
    "]"
)
# What ``clip`` alone marks (it is also applied to already-rendered text, which keeps its
# line breaks and Slack's zero-width formatting stops): controls and bidi controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_MARK_TAIL = re.compile(r"⟨U?\+?[0-9A-F]{0,6}$")


def _mark(match: re.Match[str]) -> str:
    return f"⟨U+{ord(match.group()):04X}⟩"


def visible(text: str) -> str:
    """One line, nothing hidden: line breaks as `` ⏎ ``, tabs as spaces, every invisible
    or reordering character as ``⟨U+XXXX⟩``."""
    text = _LINE_BREAKS.sub(LINE_BREAK_MARK, text).replace("\t", " ")
    return _HIDDEN.sub(_mark, text)


def alert_entry(kind: str, message: str) -> tuple[str, str] | None:
    """A timeline entry of an alert ("alert <id> from <source>: <title>") as (head, title): the
    title is the alert's text, to quote; None for every other entry."""
    head, sep, title = message.partition(": ")
    return (head, title) if kind == "alert" and sep else None


# -- defanging ---------------------------------------------------------------------------
_PERCENT_DOT = re.compile(r"%2e", re.IGNORECASE)
_WEB_SCHEME = re.compile(r"(h)(tt)(ps?)(?=:)|(f)(t)(ps?)(?=:)", re.IGNORECASE)  # also inside a word
_OTHER_SCHEME = re.compile(
    r"(?<![^\W_])(javascript|vbscript|livescript|data|file|mailto|tel|sms|callto|irc|ircs|news|nntp|ssh|telnet|"
    r"gopher|ldap|smb|sftp|wss?|git|svn|slack|tg|intent|ms-[a-z-]+):(?!\s)",
    re.IGNORECASE,
)
_WWW = re.compile(r"(www)\.", re.IGNORECASE)
_EMAIL_AT = re.compile(r"(?<=[\w.+-])@(?=[\w-]+(?:\.|\[\.\]))")
# A dot before something that could be a top-level domain (2+ letters, or punycode) ends a
# host name an auto-linker would link: every such dot is defanged, also before an underscore
# (an auto-linker may stop the host there), so aisoar's own dotted names show defanged too.
# Dots before digits (versions, timestamps) stay.
_HOST_DOT = re.compile(r"(?<=[\w-])\.(?=(?:[^\W\d_]{2,63}|xn--[\w-]+)(?![^\W_]|-))", re.IGNORECASE)
_IPV4 = re.compile(r"(?<![^\W_])(?<!\.)(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![^\W_]|\.\d)")


def _web_scheme(match: re.Match[str]) -> str:
    if match.group(1):
        return match.group(1) + ("XX" if match.group(2).isupper() else "xx") + match.group(3)
    return match.group(4) + ("X" if match.group(5).isupper() else "x") + match.group(6)


def defang(text: str) -> str:
    """``https://evil.example/x`` -> ``hxxps://evil[.]example/x``, ``www[.]evil[.]example``,
    ``user[@]evil[.]example``, ``javascript[:]…``, ``10[.]0[.]0[.]1``; ``%2E`` counts as a dot."""
    text = _PERCENT_DOT.sub("[.]", text)
    text = _WEB_SCHEME.sub(_web_scheme, text)
    text = _OTHER_SCHEME.sub(lambda m: f"{m.group(1)}[:]", text)
    text = _WWW.sub(r"\1[.]", text)
    text = _EMAIL_AT.sub("[@]", text)
    text = _IPV4.sub(r"\1[.]\2[.]\3[.]\4", text)
    return _HOST_DOT.sub("[.]", text)


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    # Do not cut a ⟨U+XXXX⟩ mark in half: a responder could not read what was hidden.
    return _MARK_TAIL.sub("", text[: limit - 1]) + "…"


def clip(text: str, limit: int) -> str:
    """At most ``limit`` characters; control and bidi characters shown as ``⟨U+XXXX⟩``.

    Keeps line breaks (it is also used on aisoar's own multi-line text): for alert text use
    one of the renderers below, which put everything on one line."""
    return _truncate(_CONTROL.sub(_mark, text), limit)


def _inert(text: str, limit: int) -> str:
    return _truncate(defang(visible(text)), limit)


def _unquote(text: str) -> str:
    """The alert's own curly quotes become straight ones: it cannot close our quote early."""
    return re.sub("[\u201c\u201d\u201e\u201f\u301d\u301e\u301f\uff02]", '"', text)


# -- Slack ------------------------------------------------------------------------------
def slack_text(text: str, limit: int = 2900) -> str:
    """Slack mrkdwn: escape the three control characters Slack defines (& < >).

    With them escaped, ``<!channel>``, ``<@U123>`` and ``<http://x|y>`` are shown as
    typed and never notify or link. Use together with ``"verbatim": true`` so Slack does
    not auto-link channel names; bare URLs are defanged (Slack clients still auto-link
    some). One line, hidden characters marked (see the module's docstring).
    """
    escaped = _inert(text, limit).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # Stop *bold* / `code` / ~strike~ from reshaping the message around the text. These
    # zero-width spaces are ours: the input's own were marked ⟨U+200B⟩ above.
    return re.sub(r"([*_~`])", "\u200b\\1\u200b", escaped)


def slack_quote(text: str, limit: int = 2900) -> str:
    """Alert text in Slack, labelled untrusted and quoted: ``_from the alert (untrusted):_ “…”``."""
    return f"_{UNTRUSTED_LABEL}_ {_OPEN}{slack_text(_unquote(text), limit)}{_CLOSE}"


# -- Jira -------------------------------------------------------------------------------
_JIRA_SPECIAL = re.compile(r"([{}\[\]|*_+\-^~?#!\\])")
_JIRA_BLOCK = re.compile(r"\b(h[1-6]|bq)\.", re.IGNORECASE)


def jira_text(text: str, limit: int = 30000) -> str:
    """Jira wiki markup: backslash-escape every markup character (so no macro, link, image,
    mention or table), and the dot of ``h1.``/``bq.``; ``& < >`` as HTML entities (Jira
    shows the characters); one line, hidden characters marked, links defanged."""
    entities = _inert(text, limit).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    escaped = _JIRA_SPECIAL.sub(r"\\\1", entities)
    return _JIRA_BLOCK.sub(r"\1\\.", escaped)


def jira_quote(text: str, limit: int = 30000) -> str:
    """Alert text in Jira wiki markup, labelled untrusted and quoted (inline, not ``{quote}``)."""
    return f"_{UNTRUSTED_LABEL}_ {_OPEN}{jira_text(_unquote(text), limit)}{_CLOSE}"


def plain_text(text: str, limit: int) -> str:
    """Plain text fields (a Jira summary, a remote link's title): one line with runs of
    spaces collapsed, hidden characters marked, links defanged."""
    return _truncate(defang(" ".join(visible(text).split())), limit)


def jira_summary(text: str) -> str:
    """Jira summary: one line, at most 255 characters."""
    return plain_text(text, 255)


def quoted(text: str) -> str:
    """“text”, its own curly quotes made straight; for plain text fields (render after)."""
    return f"{_OPEN}{_unquote(text)}{_CLOSE}"


# -- markdown (Prefect UI forms and artifacts) --------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>=])")


def markdown_text(text: str, limit: int = 10000) -> str:
    """Markdown (Prefect UI forms and artifacts): escape markup and HTML; one line, hidden
    characters marked, links defanged (the UI auto-links bare URLs, www. and e-mail)."""
    text = _inert(text, limit)
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return " ".join(text.split())


def markdown_quote(text: str, limit: int = 10000) -> str:
    """Alert text in markdown, labelled untrusted and quoted: ``_from the alert (untrusted):_ “…”``."""
    return f"_{UNTRUSTED_LABEL}_ {_OPEN}{markdown_text(_unquote(text), limit)}{_CLOSE}"
