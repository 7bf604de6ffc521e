"""Errors every connector raises, naming the system, the operation, the asset and the status."""

from __future__ import annotations


class ConnectorError(RuntimeError):
    def __init__(self, system: str, operation: str, asset: str, status: int | str | None, detail: str) -> None:
        self.system = system
        self.operation = operation
        self.asset = asset
        self.status = status
        self.detail = detail
        status_text = f"HTTP {status}" if isinstance(status, int) else (status or "no answer")
        super().__init__(f"{system} {operation} on {asset} failed ({status_text}): {detail}")


class NotConfigured(RuntimeError):
    """The connector has no settings; the step is skipped, visibly."""

    def __init__(self, system: str, settings: list[str]) -> None:
        self.system = system
        self.settings = settings
        super().__init__(f"{system} is not configured (set {', '.join(settings)})")
