"""Start every sandbox stand-in on loopback, seeded for the example alerts."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from aisoar.sandbox import jira_fake, litellm_fake, openai_fake, pagerduty_fake, slack_fake
from aisoar.sandbox.serving import BackgroundServer

# The example alert (examples/alerts/leaked-openai-key.json) reports this sandbox-only key.
DEMO_SECRET = "sk-proj-SANDBOXdemoLEAKEDkey0000000000000000000001"  # noqa: S105 - a sandbox-only fake key
DEMO_PROJECT = "proj_sandbox"
DEMO_KEY_ID = "key_sandbox_leaked"
SLACK_CHANNEL = "ai-incidents"
JIRA_PROJECT = "SEC"

CONNECTORS = ("litellm", "openai", "slack", "jira", "pagerduty")


@dataclass
class Sandbox:
    litellm: litellm_fake.LiteLLMState
    openai: openai_fake.OpenAIState
    slack: slack_fake.SlackState
    jira: jira_fake.JiraState
    pagerduty: pagerduty_fake.PagerDutyState
    servers: dict[str, BackgroundServer] = field(default_factory=dict)

    @classmethod
    def create(cls) -> Sandbox:
        return cls(
            litellm=litellm_fake.LiteLLMState(master_key=f"sk-master-{secrets.token_hex(12)}"),
            openai=openai_fake.OpenAIState(admin_key=f"sk-admin-{secrets.token_hex(12)}"),
            slack=slack_fake.SlackState(
                token=f"xoxb-sandbox-{secrets.token_hex(12)}",
                channels={SLACK_CHANNEL: "C0AISOAR01", "C0AISOAR01": "C0AISOAR01"},
            ),
            jira=jira_fake.JiraState(user="aisoar-bot", token=secrets.token_hex(16), projects=[JIRA_PROJECT]),
            pagerduty=pagerduty_fake.PagerDutyState(),
        )

    def seed_demo(self) -> None:
        """The key of the example alert exists at the gateway and at the provider."""
        self.litellm.add_key(DEMO_SECRET, alias="prod-chatbot", spend=1873.42, models=["gpt-4o"])
        self.openai.add_key(DEMO_PROJECT, DEMO_SECRET, name="prod-chatbot", key_id=DEMO_KEY_ID)

    def start(self, which: tuple[str, ...] = CONNECTORS) -> dict[str, str]:
        """Start the stand-ins named in ``which``; return the AISOAR_* settings that point at them."""
        apps = {
            "litellm": litellm_fake.create_app(self.litellm),
            "openai": openai_fake.create_app(self.openai),
            "slack": slack_fake.create_app(self.slack),
            "jira": jira_fake.create_app(self.jira),
            "pagerduty": pagerduty_fake.create_app(self.pagerduty),
        }
        env: dict[str, str] = {}
        for name in which:
            server = BackgroundServer(apps[name]).start()
            self.servers[name] = server
            url = server.url
            if name == "litellm":
                env |= {"AISOAR_LITELLM_URL": url, "AISOAR_LITELLM_MASTER_KEY": self.litellm.master_key}
            elif name == "openai":
                env |= {"AISOAR_OPENAI_ADMIN_URL": f"{url}/v1", "AISOAR_OPENAI_ADMIN_KEY": self.openai.admin_key}
            elif name == "slack":
                env |= {
                    "AISOAR_SLACK_BASE_URL": f"{url}/api/",
                    "AISOAR_SLACK_TOKEN": self.slack.token,
                    "AISOAR_SLACK_CHANNEL": SLACK_CHANNEL,
                }
            elif name == "pagerduty":
                env |= {"AISOAR_PAGERDUTY_URL": url, "AISOAR_PAGERDUTY_ROUTING_KEY": self.pagerduty.routing_key}
            elif name == "jira":
                env |= {
                    "AISOAR_JIRA_URL": url,
                    "AISOAR_JIRA_USER": self.jira.user,
                    "AISOAR_JIRA_TOKEN": self.jira.token,
                    "AISOAR_JIRA_PROJECT": JIRA_PROJECT,
                }
        return env

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers.clear()
