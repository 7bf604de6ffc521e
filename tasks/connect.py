"""Build connectors from settings; a missing setting raises ``NotConfigured``."""

from __future__ import annotations

from aisoar.config import Settings
from connectors.errors import NotConfigured
from connectors.jira import JiraTickets
from connectors.litellm import LiteLLMGateway
from connectors.openai_admin import OpenAIAdmin
from connectors.slack import SlackNotifier


def gateway(settings: Settings) -> LiteLLMGateway:
    if not settings.litellm_url or not settings.litellm_master_key:
        raise NotConfigured("LiteLLM gateway", ["AISOAR_LITELLM_URL", "AISOAR_LITELLM_MASTER_KEY"])
    return LiteLLMGateway(
        settings.litellm_url, settings.litellm_master_key.get_secret_value(), timeout=settings.http_timeout_seconds
    )


def openai_admin(settings: Settings) -> OpenAIAdmin:
    if not settings.openai_admin_url or not settings.openai_admin_key:
        raise NotConfigured("OpenAI Admin API", ["AISOAR_OPENAI_ADMIN_URL", "AISOAR_OPENAI_ADMIN_KEY"])
    return OpenAIAdmin(
        settings.openai_admin_url, settings.openai_admin_key.get_secret_value(), timeout=settings.http_timeout_seconds
    )


def slack(settings: Settings) -> SlackNotifier:
    if not settings.slack_token or not settings.slack_channel:
        raise NotConfigured("Slack", ["AISOAR_SLACK_TOKEN", "AISOAR_SLACK_CHANNEL"])
    return SlackNotifier(
        settings.slack_token.get_secret_value(), settings.slack_channel, settings.slack_base_url,
        timeout=settings.http_timeout_seconds,
    )


def jira(settings: Settings) -> JiraTickets:
    if not (settings.jira_url and settings.jira_user and settings.jira_token and settings.jira_project):
        raise NotConfigured(
            "Jira", ["AISOAR_JIRA_URL", "AISOAR_JIRA_USER", "AISOAR_JIRA_TOKEN", "AISOAR_JIRA_PROJECT"]
        )
    return JiraTickets(
        settings.jira_url, settings.jira_user, settings.jira_token.get_secret_value(), settings.jira_project,
        timeout=settings.http_timeout_seconds,
    )
