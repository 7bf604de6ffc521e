"""Build connectors from settings; a missing setting raises ``NotConfigured``.

Connectors are cached per configuration: building an HTTP client costs tens of
milliseconds (TLS context, certificate store), which would otherwise be paid on every
step of every run. The clients are thread-safe and shared by the runs of a process.
"""

from __future__ import annotations

from functools import lru_cache

from aisoar.config import Settings
from connectors.agent_control import AgentControlPlane
from connectors.anthropic_admin import AnthropicAdmin
from connectors.aws_iam import AwsIam
from connectors.chroma import ChromaStore
from connectors.errors import NotConfigured
from connectors.jira import JiraTickets
from connectors.lancedb_store import LanceDBStore
from connectors.litellm import LiteLLMGateway
from connectors.mlflow_registry import MlflowRegistry
from connectors.openai_admin import OpenAIAdmin
from connectors.pagerduty import PagerDutyEvents
from connectors.qdrant import QdrantApi
from connectors.slack import SlackNotifier
from connectors.vault import VaultCredentials


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
def _slack(token: str, channel: str, base_url: str, timeout: float, plan: bool) -> SlackNotifier:
    return SlackNotifier(token, channel, base_url, timeout=timeout, plan=plan)


@lru_cache(maxsize=16)
def _jira(url: str, user: str, token: str, project: str, timeout: float, plan: bool) -> JiraTickets:
    return JiraTickets(url, user, token, project, timeout=timeout, plan=plan)


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
        settings.plan_mode,
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
        settings.plan_mode,
    )


@lru_cache(maxsize=16)
def _anthropic_admin(url: str, admin_key: str, timeout: float, plan: bool) -> AnthropicAdmin:
    return AnthropicAdmin(url, admin_key, timeout=timeout, plan=plan)


def anthropic_admin(settings: Settings) -> AnthropicAdmin:
    if not settings.anthropic_admin_url or not settings.anthropic_admin_key:
        raise NotConfigured("Anthropic Admin API", ["AISOAR_ANTHROPIC_ADMIN_KEY", "AISOAR_ANTHROPIC_ADMIN_URL"])
    return _anthropic_admin(
        settings.anthropic_admin_url,
        settings.anthropic_admin_key.get_secret_value(),
        settings.http_timeout_seconds,
        settings.plan_mode,
    )


@lru_cache(maxsize=16)
def _vault(url: str, token: str, namespace: str | None, kv_mount: str, timeout: float, plan: bool) -> VaultCredentials:
    return VaultCredentials(url, token, namespace=namespace, kv_mount=kv_mount, timeout=timeout, plan=plan)


def vault(settings: Settings) -> VaultCredentials:
    if not settings.vault_url or not settings.vault_token:
        raise NotConfigured("Vault", ["AISOAR_VAULT_URL", "AISOAR_VAULT_TOKEN"])
    return _vault(
        settings.vault_url,
        settings.vault_token.get_secret_value(),
        settings.vault_namespace or None,
        settings.vault_kv_mount,
        settings.http_timeout_seconds,
        settings.plan_mode,
    )


@lru_cache(maxsize=16)
def _agent_control(url: str, token: str, timeout: float, plan: bool) -> AgentControlPlane:
    return AgentControlPlane(url, token, timeout=timeout, plan=plan)


def agent_control(settings: Settings) -> AgentControlPlane:
    if not settings.agent_control_url or not settings.agent_control_token:
        raise NotConfigured("Agent control plane", ["AISOAR_AGENT_CONTROL_URL", "AISOAR_AGENT_CONTROL_TOKEN"])
    return _agent_control(
        settings.agent_control_url,
        settings.agent_control_token.get_secret_value(),
        settings.http_timeout_seconds,
        settings.plan_mode,
    )


@lru_cache(maxsize=16)
def _chroma(url: str, token: str | None, tenant: str, database: str, timeout: float, plan: bool) -> ChromaStore:
    return ChromaStore(url, token, tenant, database, timeout=timeout, plan=plan)


def chroma(settings: Settings) -> ChromaStore:
    if not settings.chroma_url:
        raise NotConfigured("Chroma", ["AISOAR_CHROMA_URL"])
    return _chroma(
        settings.chroma_url,
        settings.chroma_token.get_secret_value() if settings.chroma_token else None,
        settings.chroma_tenant,
        settings.chroma_database,
        settings.http_timeout_seconds,
        settings.plan_mode,
    )


@lru_cache(maxsize=16)
def _lancedb(uri: str, plan: bool) -> LanceDBStore:
    return LanceDBStore(uri, plan=plan)


def lancedb(settings: Settings) -> LanceDBStore:
    if not settings.lancedb_uri:
        raise NotConfigured("LanceDB", ["AISOAR_LANCEDB_URI"])
    return _lancedb(settings.lancedb_uri, settings.plan_mode)


@lru_cache(maxsize=16)
def _qdrant(url: str, api_key: str, timeout: float, plan: bool) -> QdrantApi:
    return QdrantApi(url, api_key, timeout=timeout, plan=plan)


def qdrant(settings: Settings) -> QdrantApi:
    if not settings.qdrant_url or not settings.qdrant_api_key:
        raise NotConfigured("Qdrant", ["AISOAR_QDRANT_URL", "AISOAR_QDRANT_API_KEY"])
    return _qdrant(
        settings.qdrant_url,
        settings.qdrant_api_key.get_secret_value(),
        settings.http_timeout_seconds,
        settings.plan_mode,
    )


@lru_cache(maxsize=16)
def _mlflow(url: str, token: str | None, timeout: float, plan: bool) -> MlflowRegistry:
    return MlflowRegistry(url, token, timeout=timeout, plan=plan)


def mlflow(settings: Settings) -> MlflowRegistry:
    if not settings.mlflow_url:
        raise NotConfigured("MLflow", ["AISOAR_MLFLOW_URL"])  # AISOAR_MLFLOW_TOKEN: when the server wants one
    return _mlflow(
        settings.mlflow_url,
        settings.mlflow_token.get_secret_value() if settings.mlflow_token else None,
        settings.http_timeout_seconds,
        settings.plan_mode,
    )


@lru_cache(maxsize=16)
def _aws_iam(
    region: str, endpoint_url: str | None, key_id: str | None, secret: str | None, timeout: float, plan: bool
) -> AwsIam:
    return AwsIam(region, endpoint_url, key_id, secret, timeout=timeout, plan=plan)


def aws_iam(settings: Settings) -> AwsIam:
    """Explicit keys when both are set; else boto3's default chain if AISOAR_AWS_USE_DEFAULT_CREDENTIALS."""
    explicit = bool(settings.aws_access_key_id and settings.aws_secret_access_key)
    if not explicit and not settings.aws_use_default_credentials:
        raise NotConfigured(
            "AWS IAM",
            ["AISOAR_AWS_ACCESS_KEY_ID", "AISOAR_AWS_SECRET_ACCESS_KEY", "or AISOAR_AWS_USE_DEFAULT_CREDENTIALS=true"],
        )
    return _aws_iam(
        settings.aws_region,
        settings.aws_endpoint_url,
        settings.aws_access_key_id if explicit else None,
        settings.aws_secret_access_key.get_secret_value() if explicit and settings.aws_secret_access_key else None,
        settings.http_timeout_seconds,
        settings.plan_mode,
    )
