"""Prometheus metrics of the ingress: what came in and how it ended, how long dispatch took,
and what the store holds now (incidents by status, approvals waiting)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from aisoar.metrics import Milestones, all_milestones
from aisoar.prefect_retries import RETRIES
from aisoar.store import Store

OUTCOMES = (
    "accepted",
    "duplicate",
    "ignored",
    "unknown_source",
    "not_ready",
    "forbidden",
    "rate_limited",
    "too_large",
    "unauthenticated",
    "unsupported_media_type",
    "malformed",
    "invalid",
    "unavailable",
    "queue_full",
)


class _StoreState(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        incidents = GaugeMetricFamily("aisoar_incidents", "incidents by status", labels=["status"])
        for status, count in sorted(self.store.incident_counts().items()):
            incidents.add_metric([status], count)
        yield incidents
        waiting = GaugeMetricFamily("aisoar_approvals_waiting", "approval requests no one has answered yet")
        waiting.add_metric([], len(self.store.pending_approvals()))
        yield waiting
        pending = GaugeMetricFamily("aisoar_alerts_pending", "alerts in the inbox whose runs have not all started")
        pending.add_metric([], self.store.pending_count())
        yield pending


class _IncidentTimes(Collector):
    """The incidents' times to detect, acknowledge, contain and recover, from the store (read at
    most every ``every`` seconds: a scrape never walks every incident's record twice in a row).
    As a Prometheus summary per measure, type and severity (``_sum`` / ``_count``: a dashboard
    divides them), and the spend of leaked keys before their block."""

    def __init__(self, store: Store, every: float = 30.0) -> None:
        self.store = store
        self.every = every
        self._cached: tuple[float, list[Milestones]] | None = None

    def _milestones(self) -> list[Milestones]:
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] >= self.every:
            self._cached = (now, all_milestones(self.store, limit=5000))
        return self._cached[1]

    def collect(self) -> Iterator[SummaryMetricFamily | GaugeMetricFamily]:
        found = self._milestones()
        times = SummaryMetricFamily(
            "aisoar_incident_seconds",
            "incidents' time to detect (mttd), acknowledge (mtta), contain (mttc, verified) and recover (mttr), "
            "from the first alert's receipt (mttd: from when the source saw it happen)",
            labels=["measure", "incident_type", "severity"],
        )
        sums: dict[tuple[str, str, str], list[float]] = {}
        for item in found:
            for measure, seconds in item.seconds().items():
                if seconds is not None:
                    sums.setdefault((measure, item.type, item.severity), []).append(seconds)
        for labels, values in sorted(sums.items()):
            times.add_metric(list(labels), count_value=len(values), sum_value=sum(values))
        yield times
        spend = GaugeMetricFamily(
            "aisoar_leaked_key_spend_usd",
            "money leaked keys burned between the leak and their block",
            labels=["incident_type"],
        )
        spent: dict[str, float] = {}
        for item in found:
            if item.spend_usd is not None:
                spent[item.type] = spent.get(item.type, 0.0) + item.spend_usd
        for kind, amount in sorted(spent.items()):
            spend.add_metric([kind], amount)
        yield spend


class _Process(Collector):
    """This process's dispatch queue, and Prefect's retries its clients made here."""

    def __init__(self, pool_depth: Callable[[], int]) -> None:
        self.pool_depth = pool_depth

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        depth = GaugeMetricFamily("aisoar_dispatch_queue", "accepted alerts waiting for a dispatch worker")
        depth.add_metric([], self.pool_depth())
        yield depth
        retries = CounterMetricFamily(
            "aisoar_prefect_retries",
            "requests to Prefect its clients tried again, by reason: a retryable answer (503 database is locked) "
            "or a transport error (Prefect down or slow)",
            labels=["reason"],
        )
        for reason, count in sorted(RETRIES.items()):
            retries.add_metric([reason], count)
        yield retries


class IngressMetrics:
    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.alerts = Counter(
            "aisoar_alerts",
            "webhook deliveries by source and outcome (alerts for accepted ones)",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.dispatch = Histogram(
            "aisoar_dispatch_seconds",
            "from an alert's receipt until a dispatch worker is done with it: its incident, and its "
            "playbook runs started or (their creation left to other threads) their head starts done",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.registry.register(_StoreState(store))
        self.registry.register(_IncidentTimes(store))

    def watch(self, pool_depth: Callable[[], int]) -> None:
        self.registry.register(_Process(pool_depth))

    def count(self, source: str, outcome: str, amount: int = 1) -> None:
        self.alerts.labels(source=source, outcome=outcome).inc(amount)
