"""The retry policy every connector shares: bounded attempts, exponential backoff with
jitter, and a server's Retry-After honoured (capped, so a hostile answer cannot stall a run)."""

from __future__ import annotations

import random
from dataclasses import dataclass

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})  # 529: Anthropic "overloaded"


@dataclass(frozen=True)
class Backoff:
    attempts: int = 4
    backoff: float = 0.2
    max_backoff: float = 8.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after:
            try:
                return max(0.0, min(float(retry_after), self.max_backoff * 4))
            except ValueError:
                pass
        base: float = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return base / 2 + random.uniform(0, base / 2)
