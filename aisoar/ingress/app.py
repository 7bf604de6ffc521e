"""The webhook app: ``POST /webhooks/{source}``.

1. authenticate (per-source HMAC over timestamp and raw body) and enforce the size limit;
2. normalise into an ``Alert`` with the source's adapter (secrets redacted);
3. persist to the inbox, then answer 202; dispatch happens after the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from aisoar.config import Settings
from aisoar.ingress.adapters import PayloadError, adapter_for
from aisoar.ingress.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, AuthError, verify
from aisoar.ingress.dispatch import Dispatcher
from aisoar.models import Alert
from aisoar.store import Store

log = logging.getLogger("aisoar.ingress")


def _problem(status: int, error: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": error}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(status_code=status, content=body)


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


def create_app(settings: Settings, store: Store, dispatcher: Dispatcher) -> FastAPI:
    queue: asyncio.Queue[Alert] = asyncio.Queue()

    async def dispatch_loop() -> None:
        while True:
            alert = await queue.get()
            try:
                await run_in_threadpool(dispatcher.dispatch, alert)
            except Exception:
                log.exception("dispatch of %s failed; it stays in the inbox and is retried", alert.id)

    async def retry_loop() -> None:
        while True:
            await asyncio.sleep(max(settings.runner_sweep_seconds, 1.0) * 5)
            try:
                await run_in_threadpool(dispatcher.dispatch_pending, timedelta(seconds=30))
                await run_in_threadpool(dispatcher.retry_unlaunched)
            except Exception:
                log.exception("inbox retry failed")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(dispatcher.dispatch_pending)
        tasks = [asyncio.create_task(dispatch_loop()), asyncio.create_task(retry_loop())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()

    app = FastAPI(title="aisoar ingress", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/webhooks/{source}", status_code=202)
    async def receive(source: str, request: Request) -> JSONResponse:
        secret = settings.webhook_secrets.get(source)
        try:
            adapter = adapter_for(source)
        except KeyError:
            adapter = None
        if secret is None or adapter is None:
            return _problem(
                404, f"unknown source '{source[:64]}'", "a source needs a secret: AISOAR_WEBHOOK_SECRETS__<source>"
            )
        body = await _read_limited(request, settings.ingress_max_body_bytes)
        if body is None:
            return _problem(413, f"body larger than {settings.ingress_max_body_bytes} bytes")
        try:
            verified = verify(
                secret.get_secret_value(),
                body,
                request.headers.get(TIMESTAMP_HEADER),
                request.headers.get(SIGNATURE_HEADER),
                settings.ingress_replay_window_seconds,
            )
        except AuthError as exc:
            return _problem(401, "not authenticated", str(exc))
        try:
            alert = adapter(source, body)
        except PayloadError as exc:
            return _problem(422, "the payload does not fit the source's schema", exc.errors)
        except ValueError as exc:
            return _problem(400, "malformed body", str(exc))
        alert_id, created = await run_in_threadpool(store.accept_alert, alert, verified.delivery_id)
        if not created:
            return JSONResponse(status_code=200, content={"status": "duplicate", "alert_id": alert_id})
        queue.put_nowait(alert)
        return JSONResponse(status_code=202, content={"status": "accepted", "alert_id": alert_id})

    @app.get("/alerts/{alert_id}")
    def alert_status(alert_id: str) -> JSONResponse:
        found = store.alert_status(alert_id)
        if found is None:
            return _problem(404, f"no alert {alert_id[:64]}")
        status, incident_id, error = found
        runs = store.get_incident(incident_id).flow_run_ids if incident_id else {}
        return JSONResponse(
            {"alert_id": alert_id, "status": status, "incident_id": incident_id, "flow_runs": runs, "error": error}
        )

    return app
