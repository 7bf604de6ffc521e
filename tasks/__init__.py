"""Prefect tasks: one module per action family. Importing this package registers every action."""

from tasks import evidence, incident, keys, notify, paging, tickets  # noqa: F401  (registration)
from tasks.registry import REGISTRY, Action, catalog

__all__ = ["REGISTRY", "Action", "catalog"]
