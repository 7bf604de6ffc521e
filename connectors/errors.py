"""Errors every connector raises, naming the system, the operation, the asset and the status."""

from __future__ import annotations

# Answers that say the target did not act and may answer later: worth trying again in a while.
NOT_ACTED_STATUSES = frozenset({429, 503, 529})


class ConnectorError(RuntimeError):
    def __init__(
        self,
        system: str,
        operation: str,
        asset: str,
        status: int | str | None,
        detail: str,
        *,
        transient: bool | None = None,
    ) -> None:
        """``transient``: the target is unreachable or overloaded and certainly did not act, so
        the step may be tried again later (default: a refused connection, 429, 503 or 529)."""
        self.system = system
        self.operation = operation
        self.asset = asset
        self.status = status
        self.detail = detail
        self.transient = status in NOT_ACTED_STATUSES if transient is None else transient
        status_text = f"HTTP {status}" if isinstance(status, int) else (status or "no answer")
        super().__init__(f"{system} {operation} on {asset} failed ({status_text}): {detail}")


class NotConfigured(RuntimeError):
    """The connector has no settings; the step is skipped, visibly."""

    def __init__(self, system: str, settings: list[str]) -> None:
        self.system = system
        self.settings = settings
        super().__init__(f"{system} is not configured (set {', '.join(settings)})")


class Planned(RuntimeError):
    """Raised instead of making a change when a connector runs in plan mode.

    It says what would have been done; nothing at the target changed. Read-only calls
    still run in plan mode, so a plan can show the current state it would change.
    """

    def __init__(self, system: str, operation: str, asset: str, detail: str = "") -> None:
        self.system = system
        self.operation = operation
        self.asset = asset
        self.detail = detail
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"plan: {system} would {operation} on {asset}{suffix}; nothing was changed")

    def as_dict(self) -> dict[str, str]:
        return {"system": self.system, "operation": self.operation, "asset": self.asset, "detail": self.detail}


class PlanGuard:
    """For connectors that do not go through ``HttpApi``: call before every change."""

    def __init__(self, system: str, plan: bool) -> None:
        self.system = system
        self.plan = plan

    def __call__(self, operation: str, asset: str, detail: str = "") -> None:
        if self.plan:
            raise Planned(self.system, operation, asset, detail)
