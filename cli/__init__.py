"""The composition root: the `aisoar` command and the local Prefect server launcher.

The only code that imports every layer; nothing imports it."""
