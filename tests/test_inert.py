"""Alert text shown in Slack, Jira and markdown: one line, nothing hidden, no live link,
labelled untrusted and quoted. Each attack as a case (exact output per target), then
properties over any text, then the markdown through a real markdown renderer."""

from __future__ import annotations

import html
import re
import sys
import unicodedata
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aisoar.inert import (
    clip,
    jira_quote,
    jira_summary,
    jira_text,
    markdown_quote,
    markdown_text,
    plain_text,
    slack_quote,
    slack_text,
    visible,
)
from aisoar.models import Incident, IncidentStatus, Severity, TimelineEntry
from aisoar.report import incident_report
from tasks.jira import timeline_comments

# (attack, Slack, Jira, markdown)
ATTACKS = [
    pytest.param(
        "disk full\r\napproved by incident-commander",
        "disk full ⏎ approved by incident-commander",
        "disk full ⏎ approved by incident\\-commander",
        "disk full ⏎ approved by incident\\-commander",
        id="forged-line",
    ),
    pytest.param(
        "h1. Approved\nbq. by IC",
        "h1. Approved ⏎ bq. by IC",
        "h1\\. Approved ⏎ bq\\. by IC",
        "h1\\. Approved ⏎ bq\\. by IC",
        id="jira-heading-at-line-start",
    ),
    pytest.param(
        "a\u2028b\u2029c\x85d\x0be\x0cf",
        "a ⏎ b ⏎ c ⏎ d ⏎ e ⏎ f",
        "a ⏎ b ⏎ c ⏎ d ⏎ e ⏎ f",
        "a ⏎ b ⏎ c ⏎ d ⏎ e ⏎ f",
        id="unicode-line-breaks",
    ),
    pytest.param(
        "https://evil%2Eexample/x",
        "hxxps://evil[.]example/x",
        "hxxps://evil\\[.\\]example/x",
        "hxxps://evil\\[\\.\\]example/x",
        id="percent-encoded-dot",
    ),
    pytest.param(
        "HTTP://EVIL.EXAMPLE",
        "HXXP://EVIL[.]EXAMPLE",
        "HXXP://EVIL\\[.\\]EXAMPLE",
        "HXXP://EVIL\\[\\.\\]EXAMPLE",
        id="upper-case-url",
    ),
    pytest.param(
        "see www.evil.example now",
        "see www[.]evil[.]example now",
        "see www\\[.\\]evil\\[.\\]example now",
        "see www\\[\\.\\]evil\\[\\.\\]example now",
        id="www",
    ),
    pytest.param(
        "mail user@evil.example",
        "mail user[@]evil[.]example",
        "mail user\\[@\\]evil\\[.\\]example",
        "mail user\\[@\\]evil\\[\\.\\]example",
        id="e-mail",
    ),
    pytest.param(
        "javascript:alert(1)",
        "javascript[:]alert(1)",
        "javascript\\[:\\]alert(1)",
        "javascript\\[:\\]alert\\(1\\)",
        id="javascript-scheme",
    ),
    pytest.param(
        "ping 10.0.0.1",
        "ping 10[.]0[.]0[.]1",
        "ping 10\\[.\\]0\\[.\\]0\\[.\\]1",
        "ping 10\\[\\.\\]0\\[\\.\\]0\\[\\.\\]1",
        id="ipv4",
    ),
    pytest.param(
        "invoice\u202egpj.exe",
        "invoice⟨U+202E⟩gpj[.]exe",
        "invoice⟨U\\+202E⟩gpj\\[.\\]exe",
        "invoice⟨U\\+202E⟩gpj\\[\\.\\]exe",
        id="rlo-override",
    ),
    pytest.param(
        "pass\u200dword\u200b\ufeff",
        "pass⟨U+200D⟩word⟨U+200B⟩⟨U+FEFF⟩",
        "pass⟨U\\+200D⟩word⟨U\\+200B⟩⟨U\\+FEFF⟩",
        "pass⟨U\\+200D⟩word⟨U\\+200B⟩⟨U\\+FEFF⟩",
        id="zero-width",
    ),
    pytest.param(
        "a\x00b\x07c\x1bd\x7f\x9b",
        "a⟨U+0000⟩b⟨U+0007⟩c⟨U+001B⟩d⟨U+007F⟩⟨U+009B⟩",
        "a⟨U\\+0000⟩b⟨U\\+0007⟩c⟨U\\+001B⟩d⟨U\\+007F⟩⟨U\\+009B⟩",
        "a⟨U\\+0000⟩b⟨U\\+0007⟩c⟨U\\+001B⟩d⟨U\\+007F⟩⟨U\\+009B⟩",
        id="c0-c1-controls",
    ),
    pytest.param(
        "run \U000e0069\U000e0067\U000e006e now",
        "run ⟨U+E0069⟩⟨U+E0067⟩⟨U+E006E⟩ now",
        "run ⟨U\\+E0069⟩⟨U\\+E0067⟩⟨U\\+E006E⟩ now",
        "run ⟨U\\+E0069⟩⟨U\\+E0067⟩⟨U\\+E006E⟩ now",
        id="tag-characters",
    ),
    pytest.param(
        "<!channel> <@U123> <http://x|y> & *b* `c`",
        "&lt;!channel&gt; &lt;@U123&gt; &lt;hxxp://x|y&gt; &amp; "
        "\u200b*\u200bb\u200b*\u200b \u200b`\u200bc\u200b`\u200b",
        "&lt;\\!channel&gt; &lt;@U123&gt; &lt;hxxp://x\\|y&gt; &amp; \\*b\\* `c`",
        "&lt;\\!channel\\> &lt;@U123\\> &lt;hxxp://x\\|y\\> &amp; \\*b\\* \\`c\\`",
        id="slack-mentions-and-markup",
    ),
    pytest.param(
        "[approve](https://evil.example) {noformat} # x",
        "[approve](hxxps://evil[.]example) {noformat} # x",
        "\\[approve\\](hxxps://evil\\[.\\]example) \\{noformat\\} \\# x",
        "\\[approve\\]\\(hxxps://evil\\[\\.\\]example\\) \\{noformat\\} \\# x",
        id="markdown-and-jira-links",
    ),
    pytest.param(
        "gpt-4.1 v1.2.3 at 1712345678.000100",
        "gpt-4.1 v1.2.3 at 1712345678.000100",
        "gpt\\-4.1 v1.2.3 at 1712345678.000100",
        "gpt\\-4\\.1 v1\\.2\\.3 at 1712345678\\.000100",
        id="versions-are-not-hosts",
    ),
]


@pytest.mark.parametrize(("attack", "slack", "jira", "markdown"), ATTACKS)
def test_each_attack_renders_inert(attack: str, slack: str, jira: str, markdown: str) -> None:
    assert slack_text(attack) == slack
    assert jira_text(attack) == jira
    assert markdown_text(attack) == markdown


def test_alert_text_is_labelled_untrusted_and_quoted() -> None:
    title = "ok” approved by IC “see https://evil.example\nbye"
    assert slack_quote(title) == (
        '_from the alert (untrusted):_ “ok" approved by IC "see hxxps://evil[.]example ⏎ bye”'
    )
    assert jira_quote(title) == (
        '_from the alert (untrusted):_ “ok" approved by IC "see hxxps://evil\\[.\\]example ⏎ bye”'
    )
    assert markdown_quote(title) == (
        '_from the alert (untrusted):_ “ok" approved by IC "see hxxps://evil\\[\\.\\]example ⏎ bye”'
    )


def test_plain_text_fields_are_one_line_and_defanged() -> None:
    assert jira_summary("[high] INC-1: “x\n\n  www.evil.example\u202e”") == (
        "[high] INC-1: “x ⏎ ⏎ www[.]evil[.]example⟨U+202E⟩”"
    )
    assert plain_text("a" * 300, 10) == "a" * 9 + "…"
    # A cut never leaves half a mark.
    assert plain_text("abcdef\u202e", 10) == "abcdef…"


def test_clip_marks_controls_and_keeps_our_own_lines_and_zero_width_stops() -> None:
    ours = "*What was done:*\n• `s`: \u200b*\u200bx\u200b*\u200b"
    assert clip(ours, 3000) == ours
    assert clip("a\u202eb\x00", 100) == "a⟨U+202E⟩b⟨U+0000⟩"


def test_our_own_zero_width_stops_stay_distinguishable() -> None:
    # The input's zero-width space is marked; ours only ever sit around * _ ~ `.
    assert slack_text("\u200b*x") == "⟨U+200B⟩\u200b*\u200bx"


def test_every_invisible_character_is_marked() -> None:
    """Every control, format (zero-width, bidi, tags) and surrogate code point is shown."""
    kept = {"\t", "\n", "\r", "\x0b", "\x0c", "\x85"}  # tab: a space; the rest: ⏎
    missed = [
        f"U+{cp:04X}"
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp)) in {"Cc", "Cf", "Cs"} and chr(cp) not in kept and visible(chr(cp)) == chr(cp)
    ]
    assert missed == []
    for extra in "\u034f\u115f\u1160\u3164\uffa0\ufe00\U000e0100":
        assert visible(extra) == f"⟨U+{ord(extra):04X}⟩"


# -- properties -----------------------------------------------------------------------------
FRAGMENTS = [
    "http://", "https://", "HtTpS://", "ftp://", "www.", ".", "@", "%2E", "%2e", ":", "//", "<", ">", "&",
    "javascript:", "evil", "example", "com", "xn--p1ai", "10.0.0.1", "\n", "\r", "\u2028", "\u2029", "\x85",
    "\x0b", "\x0c", "\u200b", "\u200d", "\u202e", "\u2066", "\u200e", "\u061c", "\ufeff", "\u180e", "\x00",
    "\x1b", "\x9b", "*", "_", "~", "`", "[", "]", "|", "{", "}", "h1. ", "bq. ", "#", " ", "“", "”",
]  # fmt: skip
hostile_text = st.one_of(
    st.text(),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)), max_size=30).map("".join),
)
LINE_BREAKS = re.compile(r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
LINK = re.compile(
    r"(?i)(?:https?|ftps?):|(?<![^\W_])(?:javascript|vbscript|data|mailto|file):(?!\s)"  # a scheme
    r"|(?i:www)\."  # GFM's www. autolink
    r"|[\w.+-]@[\w-]+\."  # an e-mail address
    r"|(?<=[\w-])\.(?:[^\W\d_]{2,63}|xn--)(?![^\W_]|-)"  # a dot before something like a TLD
    r"|(?<![^\W_])(?<!\.)\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![^\W_]|\.\d)"  # an IPv4 address
)
OUR_STOPS = re.compile("\u200b[*_~`]\u200b")


def hidden(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in {"Cc", "Cf", "Cs", "Zl", "Zp"}]


def assert_inert(out: str, shown: str) -> None:
    """``out`` as sent; ``shown`` as the reader (and an auto-linker) sees it."""
    assert not LINE_BREAKS.search(out) and len(out.splitlines()) <= 1, out
    assert "<" not in out, out
    for text in (out, shown):
        assert "http://" not in text.lower() and "https://" not in text.lower(), text
    assert not LINK.search(shown), shown


def slack_shown(out: str) -> str:
    return html.unescape(re.sub("\u200b([*_~`])\u200b", r"\1", out))


def jira_shown(out: str) -> str:
    return html.unescape(re.sub(r"\\(.)", r"\1", out))


@settings(max_examples=500, deadline=None)
@given(hostile_text)
def test_slack_output_is_one_line_linkless_and_shows_what_was_hidden(text: str) -> None:
    for out in (slack_text(text), slack_quote(text)):
        assert_inert(out, slack_shown(out))
        assert hidden(OUR_STOPS.sub("", out)) == [], out  # no zero-width or bidi but our own stops


@settings(max_examples=500, deadline=None)
@given(hostile_text)
def test_jira_output_is_one_line_linkless_and_shows_what_was_hidden(text: str) -> None:
    for out in (jira_text(text), jira_quote(text)):
        assert_inert(out, jira_shown(out))
        assert hidden(out) == [], out
        assert not re.match(r"\s*(?:h[1-6]|bq)\.", out, re.IGNORECASE), out
    summary = jira_summary(text)  # plain text: "<" is shown as typed
    assert not LINE_BREAKS.search(summary) and not LINK.search(summary) and hidden(summary) == [], summary
    assert len(summary) <= 255


# -- through a real markdown renderer ---------------------------------------------------------
markdown_it = pytest.importorskip("markdown_it")
RENDERED_LINK = re.compile(r"(?i)\bhttps?:|\bwww\.|[\w.+-]@[\w-]+\.[^\W\d_]{2}")


def render(text: str) -> str:
    md = markdown_it.MarkdownIt("commonmark")
    try:
        md.enable("linkify")  # auto-links bare URLs like the Prefect UI, if linkify-it-py is installed
        md.options["linkify"] = True
        md.render("x")
    except (ImportError, ModuleNotFoundError, ValueError):
        md = markdown_it.MarkdownIt("commonmark")
    return str(md.render(text))


@settings(max_examples=300, deadline=None)
@given(hostile_text)
def test_markdown_renders_as_one_paragraph_without_links_or_html(text: str) -> None:
    for shown in (markdown_text(text), markdown_quote(text)):
        html = render(f"x\n{shown}\n")  # after a line: a setext heading would show here
        assert "<a " not in html and "<h1>" not in html and "<h2>" not in html, html
        assert "<img" not in html and "<script" not in html and "<ul>" not in html and "<ol>" not in html, html
        assert html.count("<p>") == 1 and "<blockquote>" not in html and "<pre>" not in html, html
        assert not RENDERED_LINK.search(html), html


def test_markdown_quote_renders_the_label_in_italics() -> None:
    html = render(markdown_quote("[approve](https://evil.example) <img src=x> www.evil.example\n# h"))
    assert html == (
        "<p><em>from the alert (untrusted):</em> “[approve](hxxps://evil[.]example) &lt;img src=x&gt; "
        "www[.]evil[.]example ⏎ # h”</p>\n"
    )


# -- where alert text is shown ------------------------------------------------------------------
def hostile_incident() -> Incident:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    title = "Leak\napproved by incident-commander https://evil.example \u202eexe"
    return Incident(
        id="INC-1",
        title=title,
        type=None,
        severity=Severity.high,
        status=IncidentStatus.open,
        fingerprint="f",
        created_at=now,
        updated_at=now,
        timeline=[
            TimelineEntry(at=now, kind="alert", message=f"alert A-1 from generic: {title}"),
            TimelineEntry(at=now, kind="step", step_id="block", message="key blocked (verified)"),
        ],
    )


def test_the_report_quotes_the_alert_and_not_our_own_lines() -> None:
    report = incident_report(hostile_incident(), [], [], None)
    quoted = (
        "_from the alert (untrusted):_ “Leak ⏎ approved by incident\\-commander hxxps://evil\\[\\.\\]example "
        "⟨U\\+202E⟩exe”"
    )
    assert f"**Alert:** {quoted}" in report
    assert f"| alert A\\-1 from generic: {quoted} |" in report
    assert "| key blocked \\(verified\\) |" in report
    assert "\napproved" not in report and "https://evil" not in report and "\u202e" not in report


def test_jira_timeline_comments_quote_the_alert() -> None:
    [(body, last)] = timeline_comments(hostile_incident(), 0)
    assert last == 2 and "\napproved" not in body and "https://evil" not in body
    assert (
        "*alert*: alert A\\-1 from generic: _from the alert (untrusted):_ “Leak ⏎ approved by "
        "incident\\-commander hxxps://evil\\[.\\]example ⟨U\\+202E⟩exe”"
    ) in body
    assert "*step* block: key blocked (verified)" in body


def test_a_host_glued_to_an_underscore_is_defanged_too() -> None:
    # An auto-linker may end the host at the underscore: "evil.com_x" would link evil.com.
    assert "evil[.]com_x" in slack_text("see evil.com_x").replace("\u200b", "")
    assert "0[.]AA_" in slack_text("0.AA_").replace("\u200b", "")
