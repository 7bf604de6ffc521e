"""Prefect's client retries the answers it deems retryable (a server on SQLite answers
``503 database is locked`` under load) and says so only at debug level, so a straining
Prefect went unseen. ``watch_retries`` counts each such retry (``aisoar_prefect_retries_total``
on ``/metrics``) and logs it as a warning, at most once every few seconds."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

log = logging.getLogger("aisoar.prefect")

RETRIES: Counter[str] = Counter()  # reason -> retries seen by Prefect clients in this process
_RETRIES_GUARD = threading.Lock()
_RETRY_LOG_EVERY = 5.0
_last_logged = 0.0


def note_retry(reason: str, detail: str = "") -> None:
    """One retried request to Prefect (``reason``: the status code or the exception's name)."""
    global _last_logged
    with _RETRIES_GUARD:
        RETRIES[reason] += 1
        total = sum(RETRIES.values())
        now = time.monotonic()
        if now - _last_logged < _RETRY_LOG_EVERY:
            return
        _last_logged = now
    log.warning("a request to Prefect is being retried (%s) %s; %d retries in this process", reason, detail, total)


class _RetryFilter(logging.Filter):
    """Counts Prefect's client retries (debug records), and lets through only what the
    logger's own level would have let through."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Received response with retryable status code"):
            note_retry(message.split("status code", 1)[1].split(".")[0].strip(), "(the Prefect server is busy)")
            return record.levelno >= self.level
        if message.startswith("Encountered retryable exception during request"):
            note_retry(record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else "exception")
            return record.levelno >= self.level
        return record.levelno >= self.level


def watch_retries() -> None:
    """Install the retry counter on Prefect's client logger (once per process)."""
    logger = logging.getLogger("prefect.client")
    if any(isinstance(f, _RetryFilter) for f in logger.filters):
        return
    logger.addFilter(_RetryFilter(logger.getEffectiveLevel()))
    logger.setLevel(logging.DEBUG)  # the retry records are debug: let them reach the filter
