"""The webhook app: ``POST /webhooks/{source}``, and the read endpoints.

For each delivery, in this order, and nothing is stored unless every check passes:
1. the source exists and has its secret; the sender's address is allowed;
2. the body is within the size limit, authenticated in the source's scheme (failed attempts
   have their own rate limit), within the source's rate limit (else 429 with Retry-After),
   and JSON;
3. it is read in the source's format into alerts (secrets redacted, every limit applied);
4. the alerts are persisted in the inbox (in group commits, aisoar/ingress/accepting.py), then
   the answer is 202; dispatch happens after it, on the dispatch workers
   (aisoar/ingress/workers.py). When their queue is full the answer is 429 with Retry-After
   before anything is stored.

Answers never echo what the sender wrote. ``/healthz`` is open (200 "ok"; 200 "degraded" with
the reasons while Prefect is unreachable: alerts are still taken and wait in the inbox; 503
while the store is unreachable: nothing can be taken); ``/alerts/{id}`` and
``/metrics`` need the API token (``/alerts/{id}`` also takes the credentials of the
source that sent the alert).
"""

from __future__ import annotations

import hashlib
import logging
import secrets as _secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from aisoar.config import Settings
from aisoar.evidence import EvidenceStore
from aisoar.ingress.accepting import InboxWriter
from aisoar.ingress.adapters import PayloadError, read
from aisoar.ingress.auth import AuthError, authenticate
from aisoar.ingress.dispatch import Dispatcher
from aisoar.ingress.limits import BodyError
from aisoar.ingress.metrics import IngressMetrics
from aisoar.ingress.slack_actions import MAX_BODY as MAX_SLACK_BODY
from aisoar.ingress.slack_actions import ClickDesk, SlackRequestError, clicks, verify
from aisoar.ingress.sources import Source, load_sources, retry_after
from aisoar.ingress.workers import DispatchPool
from aisoar.models import utcnow
from aisoar.store import Store

log = logging.getLogger("aisoar.ingress")
JSON_TYPES = ("application/json",)
# Answers given before the body is read end the connection: the rest of the body would
# otherwise be read as the next request on a kept-alive connection.
CLOSE = {"Connection": "close"}
# A body this small is read on the event loop (well under a millisecond); a larger one in a
# thread: redacting it takes milliseconds that other senders would wait.
INLINE_READ_BYTES = 16 * 1024


def _problem(status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": error}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(status_code=status, content=body, headers=headers)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


def _item_delivery(delivery_id: str, index: int) -> str:
    """The delivery id of the index-th alert of a delivery (at most 64 characters)."""
    basis = delivery_id if index == 0 else f"{delivery_id}:{index}"
    return basis if len(basis) <= 64 else hashlib.sha256(basis.encode()).hexdigest()


def create_app(
    settings: Settings,
    store: Store,
    dispatcher: Dispatcher,
    sources: dict[str, Source] | None = None,
    desk: ClickDesk | None = None,
    *,
    evidence: EvidenceStore | None = None,
    prefect_problem: Callable[[], str | None] = lambda: None,
) -> FastAPI:
    """``evidence``: where the alerts of a storm are kept as they arrive; ``prefect_problem``:
    why runs cannot start now (the runtime's watch on Prefect), for /healthz and the retries."""
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
        try:
            yield
        finally:
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
        ref = _secrets.token_hex(4)
        log.error("unexpected error %s on %s %s: %s", ref, request.method, request.url.path, type(exc).__name__)
        return _problem(500, f"internal error (reference {ref} in aisoar's log); the delivery was not stored")

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            store.pending_count()
        except sa.exc.SQLAlchemyError as exc:
            problem = f"the store is unreachable ({type(exc).__name__}): alerts cannot be taken"
            return JSONResponse(status_code=503, content={"status": "unavailable", "problems": [problem]})
        problems = []
        if reason := prefect_problem():
            problems.append(f"{reason}: alerts are taken and wait in the inbox until it answers")
        if pool.full:
            problems.append("the dispatch queue is full: deliveries get 429 until it drains")
        if problems:
            return JSONResponse({"status": "degraded", "problems": problems})
        return JSONResponse({"status": "ok"})

    async def receive(request: Request) -> Response:
        """``POST /webhooks/{source_name}``: a plain route (no parameters for FastAPI to resolve;
        the request is read here, in the order above)."""
        source = known.get(request.path_params["source_name"])
        if source is None:
            metrics.count("-", "unknown_source")
            return _problem(
                404, "no source by that name", "sources are declared in the sources folder (sources/*.yaml)", CLOSE
            )
        name = source.name
        if source.credentials is None:
            metrics.count(name, "not_ready")
            return _problem(404, f"source '{name}' cannot take alerts yet", source.missing, CLOSE)
        if not source.allows(request.client.host if request.client else None):
            metrics.count(name, "forbidden")
            return _problem(403, "this address may not send to this source (allow_from)", headers=CLOSE)
        body = await _read_limited(request, settings.ingress_max_body_bytes)
        if body is None:
            metrics.count(name, "too_large")
            return _problem(413, f"body larger than {settings.ingress_max_body_bytes} bytes", headers=CLOSE)
        try:
            verified = authenticate(source.credentials, request.headers, body, settings.ingress_replay_window_seconds)
        except AuthError as exc:
            # Failed attempts have a bucket of their own: a stranger cannot use up the sender's.
            wait = source.failures.take()
            metrics.count(name, "unauthenticated" if wait is None else "rate_limited")
            if wait is not None:
                return _problem(
                    429, "too many failed attempts; retry later", headers={"Retry-After": retry_after(wait)}
                )
            return _problem(401, "not authenticated", str(exc))
        wait = source.limit.take()
        if wait is not None:
            metrics.count(name, "rate_limited")
            return _problem(
                429,
                f"more than {source.spec.rate_limit_per_minute} deliveries a minute; retry later",
                headers={"Retry-After": retry_after(wait)},
            )
        if pool.full:
            metrics.count(name, "queue_full")
            return _problem(
                429, "aisoar is dispatching a burst; retry later (nothing was stored)", headers={"Retry-After": "2"}
            )
        if not _is_json(request.headers.get("content-type")):
            metrics.count(name, "unsupported_media_type")
            return _problem(415, "send the body as Content-Type: application/json")
        try:
            if len(body) <= INLINE_READ_BYTES:
                reading = read(source.format, name, body, request.headers)
            else:
                reading = await run_in_threadpool(read, source.format, name, body, request.headers)
        except BodyError as exc:
            metrics.count(name, "malformed")
            return _problem(400, "malformed body", str(exc))
        except PayloadError as exc:
            metrics.count(name, "invalid")
            return _problem(422, "the payload does not fit the source's schema", exc.errors)
        if reading.ignored is not None:
            metrics.count(name, "ignored")
            return JSONResponse(status_code=200, content={"status": "ignored", "detail": reading.ignored})
        items = [(alert, _item_delivery(verified.delivery_id, i)) for i, alert in enumerate(reading.alerts)]
        try:  # stored with what other senders sent meanwhile, in one transaction
            stored = await writer.accept_async(items)
        except sa.exc.OperationalError as exc:  # the store is busy or down: the sender retries
            log.warning("could not store a delivery from %s: %s", name, type(exc).__name__)
            metrics.count(name, "unavailable")
            return _problem(503, "the inbox is unavailable; retry", headers={"Retry-After": "5"})
        created = [alert for (alert, _), (_, new) in zip(items, stored, strict=True) if new]
        for alert in created:
            pool.offer(alert)  # else it waits in the inbox: the upkeep queues it when there is room
        ids = [alert_id for alert_id, _ in stored]
        if not created:
            metrics.count(name, "duplicate")
            return JSONResponse(status_code=200, content={"status": "duplicate", "alert_id": ids[0], "alert_ids": ids})
        metrics.count(name, "accepted", len(created))
        return JSONResponse(status_code=202, content={"status": "accepted", "alert_id": ids[0], "alert_ids": ids})

    app.add_route("/webhooks/{source_name}", receive, methods=["POST"])
    app.add_middleware(WebhookFastPath, handler=receive)

    @app.post("/slack/interactivity")
    async def slack_interactivity(request: Request) -> Response:
        """Slack's Request URL: the Approve / Reject buttons of approval requests."""
        secret = settings.slack_signing_secret
        if secret is None or desk is None:
            return _problem(404, "Slack interactivity is not set up", "set AISOAR_SLACK_SIGNING_SECRET", CLOSE)
        body = await _read_limited(request, MAX_SLACK_BODY)
        if body is None:
            return _problem(413, f"body larger than {MAX_SLACK_BODY} bytes", headers=CLOSE)
        try:
            verify(secret.get_secret_value(), body, request.headers)
            found = clicks(body)
        except SlackRequestError as exc:
            return _problem(exc.status, exc.detail)
        for click in found:
            try:
                # Recorded before Slack gets its 200; the rest (updating the message, telling the
                # thread, waking the run) happens after the answer: Slack waits 3 seconds at most.
                follow_up = await run_in_threadpool(desk.record_click, click)
            except sa.exc.OperationalError:
                return _problem(503, "the store is busy; click again", headers={"Retry-After": "2"})
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
            return _problem(
                401,
                "not authenticated",
                "send the API token (Authorization: Bearer AISOAR_API_TOKEN) or the credentials of the alert's source",
            )
        if found is None:
            return _problem(404, "no such alert")
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
            return _problem(401, "not authenticated", hint)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.state.sources = known
    app.state.metrics = metrics
    app.state.pool = pool
    return app


class WebhookFastPath:
    """``POST /webhooks/{source}`` handed to its handler at once, past the router and the layers
    only the other endpoints use (each cost the ingress a few per cent of its time in a storm).
    It sits inside Starlette's error middleware: an unexpected error still gets the app's 500."""

    def __init__(self, app: ASGIApp, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            name = webhook_source(scope["path"])
            if name is not None:
                scope["path_params"] = {"source_name": name}
                response = await self.handler(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def webhook_source(path: str) -> str | None:
    """The source named by a webhook path, as the route ``/webhooks/{source_name}`` reads it."""
    if not path.startswith(WEBHOOKS):
        return None
    name = path[len(WEBHOOKS) :]
    return name if name and "/" not in name else None


WEBHOOKS = "/webhooks/"


def _logged(work: Callable[[], None]) -> None:
    try:
        work()
    except Exception:
        log.exception("the follow-up of a Slack click failed (the click itself is recorded)")
