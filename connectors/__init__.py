"""One module per external system: plain classes over httpx / slack-sdk / jira, no Prefect."""
