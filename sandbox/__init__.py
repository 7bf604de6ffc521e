"""Faithful local stand-ins for the SaaS systems aisoar talks to (LiteLLM key API, OpenAI
Admin API, Slack Web API, Jira REST). The tests use them, and ``aisoar up`` starts them
as a sandbox when the real systems are not configured. Each one checks what the real
service checks: authentication, required fields and shapes."""
