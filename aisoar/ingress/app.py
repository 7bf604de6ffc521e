"""The ingress app: ``POST /webhooks/{source}`` (aisoar/ingress/webhooks.py: every check,
then the inbox, then 202), Slack's buttons, and the read endpoints.

Dispatch happens after the answer, on the dispatch workers (aisoar/ingress/workers.py). When
webhooks are taken by processes of their own (aisoar/ingress/processes.py), this app serves
the rest, which they pass on, and dispatches what they store.

``/healthz`` is open (200 "ok"; 200 "degraded" with the reasons while Prefect is unreachable:
alerts are still taken and wait in the inbox; 503 while the store is unreachable: nothing can
be taken); ``/alerts/{id}`` and ``/metrics`` need the API token (``/alerts/{id}`` also takes
the credentials of the source that sent the alert).
"""

from __future__ import annotations

import logging
import secrets as _secrets
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Protocol

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from aisoar.config import Settings
from aisoar.evidence import EvidenceStore
from aisoar.ingress.accepting import InboxWriter
from aisoar.ingress.auth import AuthError, authenticate
from aisoar.ingress.dispatch import Dispatcher
from aisoar.ingress.metrics import IngressMetrics
from aisoar.ingress.slack_actions import MAX_BODY as MAX_SLACK_BODY
from aisoar.ingress.slack_actions import ClickDesk, SlackRequestError, clicks, verify
from aisoar.ingress.sources import Source, load_sources
from aisoar.ingress.webhooks import (
    CLOSE,
    Count,
    Intake,
    WebhookFastPath,
    internal_error,
    problem,
    read_limited,
    webhook_handler,
)
from aisoar.ingress.workers import DispatchPool
from aisoar.models import utcnow
from aisoar.store import Store

log = logging.getLogger("aisoar.ingress")


class Companions(Protocol):
    """Processes that take webhooks beside this app (aisoar/ingress/processes.py)."""

    def start(self, intake: Intake, count: Count) -> None: ...

    def stop(self) -> None: ...


def create_app(
    settings: Settings,
    store: Store,
    dispatcher: Dispatcher,
    sources: dict[str, Source] | None = None,
    desk: ClickDesk | None = None,
    *,
    evidence: EvidenceStore | None = None,
    prefect_problem: Callable[[], str | None] = lambda: None,
    webhook_processes: Companions | None = None,
) -> FastAPI:
    """``evidence``: where the alerts of a storm are kept as they arrive; ``prefect_problem``:
    why runs cannot start now (the runtime's watch on Prefect), for /healthz and the retries;
    ``webhook_processes``: the processes that take the webhooks instead of this app, started
    once its dispatch workers are and stopped before them."""
    known = load_sources(settings) if sources is None else sources
    metrics = IngressMetrics(store)
    pool = DispatchPool(
        dispatcher,
        workers=settings.dispatch_workers,
        capacity=settings.dispatch_queue,
        observe=lambda alert: metrics.dispatch.observe((utcnow() - alert.received_at).total_seconds()),
        evidence=evidence,
        ready=prefect_problem,
    )
    metrics.watch(pool_depth=lambda: pool.depth)
    writer = InboxWriter(store)
    followers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="aisoar-click")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.start()
        # What waited in the inbox (a restart, an outage): queued at once, not after a timer.
        await run_in_threadpool(pool.upkeep, True)
        if webhook_processes is not None:
            await run_in_threadpool(webhook_processes.start, pool, metrics.count)
        try:
            yield
        finally:
            if webhook_processes is not None:  # what they stored is offered here until they end
                await run_in_threadpool(webhook_processes.stop)
            await run_in_threadpool(writer.stop)
            await run_in_threadpool(pool.stop)
            followers.shutdown(wait=False)

    app = FastAPI(
        title="aisoar ingress",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # No OpenTelemetry here (the metrics are /metrics): its per-request check of the global
        # providers cost a twentieth of the ingress's time in a storm.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(request, exc)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            store.pending_count()
        except sa.exc.SQLAlchemyError as exc:
            down = f"the store is unreachable ({type(exc).__name__}): alerts cannot be taken"
            return JSONResponse(status_code=503, content={"status": "unavailable", "problems": [down]})
        problems = []
        if reason := prefect_problem():
            problems.append(f"{reason}: alerts are taken and wait in the inbox until it answers")
        if pool.full:
            problems.append("the dispatch queue is full: deliveries get 429 until it drains")
        if problems:
            return JSONResponse({"status": "degraded", "problems": problems})
        return JSONResponse({"status": "ok"})

    receive = webhook_handler(settings, known, writer, pool, metrics.count)

    if webhook_processes is None:  # else they take the webhooks: none is read here
        app.add_route("/webhooks/{source_name}", receive, methods=["POST"])
        app.add_middleware(WebhookFastPath, handler=receive)

    @app.post("/slack/interactivity")
    async def slack_interactivity(request: Request) -> Response:
        """Slack's Request URL: the Approve / Reject buttons of approval requests."""
        secret = settings.slack_signing_secret
        if secret is None or desk is None:
            return problem(404, "Slack interactivity is not set up", "set AISOAR_SLACK_SIGNING_SECRET", CLOSE)
        body = await read_limited(request, MAX_SLACK_BODY)
        if body is None:
            return problem(413, f"body larger than {MAX_SLACK_BODY} bytes", headers=CLOSE)
        try:
            verify(secret.get_secret_value(), body, request.headers)
            found = clicks(body)
        except SlackRequestError as exc:
            return problem(exc.status, exc.detail)
        for click in found:
            try:
                # Recorded before Slack gets its 200; the rest (updating the message, telling the
                # thread, waking the run) happens after the answer: Slack waits 3 seconds at most.
                follow_up = await run_in_threadpool(desk.record_click, click)
            except sa.exc.OperationalError:
                return problem(503, "the store is busy; click again", headers={"Retry-After": "2"})
            if follow_up is not None:
                # On workers of their own: telling Slack and Jira and waking runs must never hold
                # up the recording of the next clicks (a burst of them waits for these threads).
                followers.submit(_logged, follow_up)
        return Response(status_code=200)

    def _authorized_reader(request: Request, alert_source: str | None) -> bool:
        token = settings.api_token.get_secret_value() if settings.api_token else None
        given = request.headers.get("authorization", "")
        if token and _secrets.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
        source = known.get(alert_source or "")
        if source is None or source.credentials is None:
            return False
        try:
            authenticate(source.credentials, request.headers, b"", settings.ingress_replay_window_seconds)
        except AuthError:
            return False
        return True

    @app.get("/alerts/{alert_id}")
    def alert_status(alert_id: str, request: Request) -> JSONResponse:
        found = store.alert_record(alert_id[:64])
        if not _authorized_reader(request, found.source if found else None):
            return problem(
                401,
                "not authenticated",
                "send the API token (Authorization: Bearer AISOAR_API_TOKEN) or the credentials of the alert's source",
            )
        if found is None:
            return problem(404, "no such alert")
        runs = store.get_incident(found.incident_id).flow_run_ids if found.incident_id else {}
        return JSONResponse(
            {
                "alert_id": found.id,
                "source": found.source,
                "status": found.status,
                "incident_id": found.incident_id,
                "flow_runs": runs,
                "error": found.error,
            }
        )

    @app.get("/metrics")
    def prometheus(request: Request) -> Response:
        if not _authorized_reader(request, None):
            hint = (
                "send Authorization: Bearer <AISOAR_API_TOKEN>"
                if settings.api_token
                else ("no API token is set: set AISOAR_API_TOKEN on aisoar to read /metrics")
            )
            return problem(401, "not authenticated", hint)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.state.sources = known
    app.state.metrics = metrics
    app.state.pool = pool
    return app


def _logged(work: Callable[[], None]) -> None:
    try:
        work()
    except Exception:
        log.exception("the follow-up of a Slack click failed (the click itself is recorded)")
