"""Prefect tasks: one module per action family. Importing this package registers every action."""

from tasks import (  # noqa: F401  (registration)
    agents,
    announce,
    cloud_keys,
    credentials,
    evidence,
    gateway,
    incident,
    keys,
    model_registry,
    notify,
    paging,
    tickets,
    vector_qdrant,
    vector_stores,
)
from tasks.registry import REGISTRY, Action, catalog

__all__ = ["REGISTRY", "Action", "catalog"]
