"""The baseline: the plain Prefect way, a flow served with flow.serve() and default settings."""

from __future__ import annotations

import os

from prefect import flow, task

from connectors.litellm import LiteLLMGateway


@task
def block(key_hash: str) -> None:
    gateway = LiteLLMGateway(os.environ["AISOAR_LITELLM_URL"], os.environ["AISOAR_LITELLM_MASTER_KEY"])
    gateway.block_key(key_hash)


@flow(name="block-key")
def block_key(key_hash: str) -> None:
    block(key_hash)


if __name__ == "__main__":
    block_key.serve(name="plain-block")
