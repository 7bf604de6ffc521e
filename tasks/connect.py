"""Build connectors from settings; a missing setting raises ``NotConfigured``.

Connectors are cached per configuration: building an HTTP client costs tens of
milliseconds (TLS context, certificate store), which would otherwise be paid on every
step of every run. The clients are thread-safe and shared by the runs of a process.
"""

from __future__ import annotations

from functools import lru_cache

from aisoar.config import Settings
from connectors.errors import NotConfigured
from connectors.jira import JiraTickets
from connectors.litellm import LiteLLMGateway
from connectors.openai_admin import OpenAIAdmin
from connectors.pagerduty import PagerDutyEvents
from connectors.slack import SlackNotifier


@lru_cache(maxsize=16)
def _gateway(url: str, master_key: str, timeout: float, plan: bool) -> LiteLLMGateway:
    return LiteLLMGateway(url, master_key, timeout=timeout, plan=plan)


@lru_cache(maxsize=16)
def _openai_admin(url: str, admin_key: str, timeout: float, plan: bool) -> OpenAIAdmin:
    return OpenAIAdmin(url, admin_key, timeout=timeout, plan=plan)


@lru_cache(maxsize=16)
def _pagerduty(url: str, routing_key: str, timeout: float, plan: bool) -> PagerDutyEvents:
    return PagerDutyEvents(url, routing_key, timeout=timeout, plan=plan)


@lru_cache(maxsize=16)
def _slack(token: str, channel: str, base_url: str, timeout: float) -> SlackNotifier:
    return SlackNotifier(token, channel, base_url, timeout=timeout)


@lru_cache(maxsize=16)
def _jira(url: str, user: str, token: str, project: str, timeout: float) -> JiraTickets:
    return JiraTickets(url, user, token, project, timeout=timeout)


def gateway(settings: Settings) -> LiteLLMGateway:
    if not settings.litellm_url or not settings.litellm_master_key:
        raise NotConfigured("LiteLLM gateway", ["AISOAR_LITELLM_URL", "AISOAR_LITELLM_MASTER_KEY"])
    return _gateway(
        settings.litellm_url,
        settings.litellm_master_key.get_secret_value(),
        settings.http_timeout_seconds,
        settings.plan_mode,
    )


def openai_admin(settings: Settings) -> OpenAIAdmin:
    if not settings.openai_admin_url or not settings.openai_admin_key:
        raise NotConfigured("OpenAI Admin API", ["AISOAR_OPENAI_ADMIN_URL", "AISOAR_OPENAI_ADMIN_KEY"])
    return _openai_admin(
        settings.openai_admin_url,
        settings.openai_admin_key.get_secret_value(),
        settings.http_timeout_seconds,
        settings.plan_mode,
    )


def pagerduty(settings: Settings) -> PagerDutyEvents:
    if not settings.pagerduty_routing_key:
        raise NotConfigured("PagerDuty", ["AISOAR_PAGERDUTY_ROUTING_KEY"])
    return _pagerduty(
        settings.pagerduty_url,
        settings.pagerduty_routing_key.get_secret_value(),
        settings.http_timeout_seconds,
        settings.plan_mode,
    )


def slack(settings: Settings) -> SlackNotifier:
    if not settings.slack_token or not settings.slack_channel:
        raise NotConfigured("Slack", ["AISOAR_SLACK_TOKEN", "AISOAR_SLACK_CHANNEL"])
    return _slack(
        settings.slack_token.get_secret_value(),
        settings.slack_channel,
        settings.slack_base_url,
        settings.http_timeout_seconds,
    )


def jira(settings: Settings) -> JiraTickets:
    if not (settings.jira_url and settings.jira_user and settings.jira_token and settings.jira_project):
        raise NotConfigured("Jira", ["AISOAR_JIRA_URL", "AISOAR_JIRA_USER", "AISOAR_JIRA_TOKEN", "AISOAR_JIRA_PROJECT"])
    return _jira(
        settings.jira_url,
        settings.jira_user,
        settings.jira_token.get_secret_value(),
        settings.jira_project,
        settings.http_timeout_seconds,
    )
