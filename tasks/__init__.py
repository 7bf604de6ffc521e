"""Prefect tasks: one module per action namespace (``tasks/<namespace>.py`` registers
``<namespace>.*``). ``REGISTRY`` loads every namespace on first use, whichever entry point
asks."""

from tasks.registry import REGISTRY, Action, catalog

__all__ = ["REGISTRY", "Action", "catalog"]
