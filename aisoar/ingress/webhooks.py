"""``POST /webhooks/{source}``: one delivery read, checked and stored, in this order, and
nothing is stored unless every check passes:

1. the source exists and has its secret; the sender's address is allowed;
2. the body is within the size limit, authenticated in the source's scheme (failed attempts
   have their own rate limit), within the source's rate limit (else 429 with Retry-After),
   and JSON;
3. it is read in the source's format into alerts (secrets redacted, every limit applied);
4. the alerts are persisted in the inbox (in group commits, aisoar/ingress/accepting.py), then
   the answer is 202; the new alerts are handed to the ``Intake`` (the dispatch workers, or
   the main process's when webhooks are taken by processes of their own). When the intake is
   full the answer is 429 with Retry-After before anything is stored.

Answers never echo what the sender wrote. The same handler serves in the main process
(``create_app``) and in the webhook processes (aisoar/ingress/processes.py).
"""

from __future__ import annotations

import hashlib
import logging
import secrets as _secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from aisoar.config import Settings
from aisoar.ingress.accepting import InboxWriter
from aisoar.ingress.adapters import PayloadError, read
from aisoar.ingress.auth import AuthError, authenticate
from aisoar.ingress.limits import BodyError
from aisoar.ingress.sources import Source, retry_after
from aisoar.models import Alert

log = logging.getLogger("aisoar.ingress")
JSON_TYPES = ("application/json",)
# Answers given before the body is read end the connection: the rest of the body would
# otherwise be read as the next request on a kept-alive connection.
CLOSE = {"Connection": "close"}
# A body this small is read on the event loop (well under a millisecond); a larger one in a
# thread: redacting it takes milliseconds that other senders would wait.
INLINE_READ_BYTES = 16 * 1024
WEBHOOKS = "/webhooks/"

Handler = Callable[[Request], Awaitable[Response]]
Count = Callable[[str, str, int], None]  # (source, outcome, how many): the ingress's metrics


class Intake(Protocol):
    """Where stored alerts go to be dispatched."""

    @property
    def full(self) -> bool:
        """Deliveries are refused (429) until it has room."""
        ...

    def offer(self, alert: Alert) -> bool:
        """Take a stored alert; False leaves it waiting in the inbox (the upkeep finds it)."""
        ...


def problem(status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": error}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(status_code=status, content=body, headers=headers)


def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """The answer to an unexpected error: a reference to the log line, nothing of the error."""
    ref = _secrets.token_hex(4)
    log.error("unexpected error %s on %s %s: %s", ref, request.method, request.url.path, type(exc).__name__)
    return problem(500, f"internal error (reference {ref} in aisoar's log); the delivery was not stored")


async def read_limited(request: Request, limit: int) -> bytes | None:
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


def webhook_handler(
    settings: Settings, known: dict[str, Source], writer: InboxWriter, intake: Intake, count: Count
) -> Handler:
    """The handler of ``POST /webhooks/{source_name}`` (a plain route: no parameters for FastAPI
    to resolve; the request is read here, in the order above)."""

    async def receive(request: Request) -> Response:
        source = known.get(request.path_params["source_name"])
        if source is None:
            count("-", "unknown_source", 1)
            return problem(
                404, "no source by that name", "sources are declared in the sources folder (sources/*.yaml)", CLOSE
            )
        name = source.name
        if source.credentials is None:
            count(name, "not_ready", 1)
            return problem(404, f"source '{name}' cannot take alerts yet", source.missing, CLOSE)
        if not source.allows(request.client.host if request.client else None):
            count(name, "forbidden", 1)
            return problem(403, "this address may not send to this source (allow_from)", headers=CLOSE)
        body = await read_limited(request, settings.ingress_max_body_bytes)
        if body is None:
            count(name, "too_large", 1)
            return problem(413, f"body larger than {settings.ingress_max_body_bytes} bytes", headers=CLOSE)
        try:
            verified = authenticate(source.credentials, request.headers, body, settings.ingress_replay_window_seconds)
        except AuthError as exc:
            # Failed attempts have a bucket of their own: a stranger cannot use up the sender's.
            wait = source.failures.take()
            count(name, "unauthenticated" if wait is None else "rate_limited", 1)
            if wait is not None:
                return problem(429, "too many failed attempts; retry later", headers={"Retry-After": retry_after(wait)})
            return problem(401, "not authenticated", str(exc))
        wait = source.limit.take()
        if wait is not None:
            count(name, "rate_limited", 1)
            return problem(
                429,
                f"more than {source.spec.rate_limit_per_minute} deliveries a minute; retry later",
                headers={"Retry-After": retry_after(wait)},
            )
        if intake.full:
            count(name, "queue_full", 1)
            return problem(
                429, "aisoar is dispatching a burst; retry later (nothing was stored)", headers={"Retry-After": "2"}
            )
        if not _is_json(request.headers.get("content-type")):
            count(name, "unsupported_media_type", 1)
            return problem(415, "send the body as Content-Type: application/json")
        try:
            if len(body) <= INLINE_READ_BYTES:
                reading = read(source.format, name, body, request.headers)
            else:
                reading = await run_in_threadpool(read, source.format, name, body, request.headers)
        except BodyError as exc:
            count(name, "malformed", 1)
            return problem(400, "malformed body", str(exc))
        except PayloadError as exc:
            count(name, "invalid", 1)
            return problem(422, "the payload does not fit the source's schema", exc.errors)
        if reading.ignored is not None:
            count(name, "ignored", 1)
            return JSONResponse(status_code=200, content={"status": "ignored", "detail": reading.ignored})
        items = [(alert, _item_delivery(verified.delivery_id, i)) for i, alert in enumerate(reading.alerts)]
        try:  # stored with what other senders sent meanwhile, in one transaction
            stored = await writer.accept_async(items)
        except sa.exc.OperationalError as exc:  # the store is busy or down: the sender retries
            log.warning("could not store a delivery from %s: %s", name, type(exc).__name__)
            count(name, "unavailable", 1)
            return problem(503, "the inbox is unavailable; retry", headers={"Retry-After": "5"})
        created = [alert for (alert, _), (_, new) in zip(items, stored, strict=True) if new]
        for alert in created:
            intake.offer(alert)  # else it waits in the inbox: the upkeep queues it when there is room
        ids = [alert_id for alert_id, _ in stored]
        if not created:
            count(name, "duplicate", 1)
            return JSONResponse(status_code=200, content={"status": "duplicate", "alert_id": ids[0], "alert_ids": ids})
        count(name, "accepted", len(created))
        return JSONResponse(status_code=202, content={"status": "accepted", "alert_id": ids[0], "alert_ids": ids})

    return receive


class WebhookFastPath:
    """``POST /webhooks/{source}`` handed to its handler at once, past the router and the layers
    only the other endpoints use (each cost the ingress a few per cent of its time in a storm).
    It sits inside Starlette's error middleware: an unexpected error still gets the app's 500."""

    def __init__(self, app: ASGIApp, handler: Handler) -> None:
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
