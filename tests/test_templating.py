"""Alert text is data: templating, Slack, Jira and markdown rendering keep it inert."""

from __future__ import annotations

import pytest

from aisoar.inert import jira_text, markdown_text, slack_text
from aisoar.templating import TemplateProblem, evaluate_condition, render, render_value

HOSTILE = "{{ 7*7 }} {% for x in range(3) %}loop{% endfor %} {{ ''.__class__.__mro__ }}"


def test_alert_text_that_looks_like_a_template_is_not_evaluated() -> None:
    context = {"alert": {"title": HOSTILE}}
    assert render("Alert: {{ alert.title }}", context) == f"Alert: {HOSTILE}"
    assert "49" not in render("{{ alert.title }}", context)


def test_nested_values_render_once() -> None:
    context = {"alert": {"title": "{{ alert.title }}"}}
    assert render_value({"a": ["{{ alert.title }}"]}, context) == {"a": ["{{ alert.title }}"]}


def test_spec_templates_run_in_a_sandbox() -> None:
    with pytest.raises(TemplateProblem):
        render("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})


def test_undefined_names_are_errors_not_blanks() -> None:
    with pytest.raises(TemplateProblem, match="has no attribute"):
        render("{{ alert.nope }}", {"alert": {}})


def test_conditions() -> None:
    assert evaluate_condition("entities.k.id", {"entities": {"k": {"id": "x"}}}) is True
    assert evaluate_condition("entities.k.id", {"entities": {"k": {"id": None}}}) is False


def test_slack_mentions_and_links_are_inert() -> None:
    text = slack_text("hi <!channel> see <http://evil.example|docs> & <@U123>")
    assert "<" not in text and ">" not in text
    # The link is also defanged (hxxp, [.]): Slack clients auto-link some bare URLs.
    assert "&lt;!channel&gt;" in text and "&lt;hxxp://evil[.]example|docs&gt;" in text and "&amp;" in text


def test_slack_formatting_cannot_restyle_the_message() -> None:
    assert "*bold*" not in slack_text("*bold*")


def test_jira_markup_is_escaped() -> None:
    text = jira_text("{noformat}x{noformat} [click|http://evil] {color:red}")
    assert "{noformat}" not in text and "[click|" not in text
    assert text.startswith("\\{noformat\\}")


def test_markdown_links_and_html_are_escaped() -> None:
    text = markdown_text("[approve](http://evil) <img src=x onerror=alert(1)>\n# heading")
    assert "](" not in text and "<img" not in text and "\n" not in text
