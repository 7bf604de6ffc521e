"""A fault-injecting reverse proxy for connector tests.

Put it between a connector and the real server (or stand-in): it answers the first
requests with scripted faults (429 with Retry-After, a 500 storm, a slow answer) and
forwards everything else unchanged, so retries, backoff and timeouts are tested against
the real system's real answers. It records every request it saw.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI, Request, Response

from sandbox.serving import BackgroundServer

HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


@dataclass(frozen=True)
class Fault:
    status: int = 0  # 0: forward (after ``delay``)
    retry_after: str | None = None
    delay: float = 0.0
    body: str = '{"error": "injected fault"}'


def too_many(retry_after: str = "1") -> Fault:
    return Fault(status=429, retry_after=retry_after)


def server_error() -> Fault:
    return Fault(status=500)


def slow(seconds: float) -> Fault:
    return Fault(delay=seconds)


@dataclass
class Seen:
    method: str
    path: str
    at: float
    headers: dict[str, str]
    body: bytes
    fault: Fault | None


@dataclass
class FaultProxy:
    upstream: str
    match: str = ""  # regex on "METHOD /path"; only matching requests get faults
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    down_until: float = 0.0  # monotonic time: until then every request is answered ``down_status``
    down_status: int = 503

    def down_for(self, seconds: float, status: int = 503) -> None:
        """An outage: every request gets ``status`` for ``seconds`` (``float("inf")``: for good)."""
        with self.lock:
            self.down_until = time.monotonic() + seconds
            self.down_status = status

    def up(self) -> None:
        with self.lock:
            self.down_until = 0.0

    def script(self, *faults: Fault, match: str = "") -> None:
        with self.lock:
            self.faults = list(faults)
            self.match = match
            self.seen.clear()

    def matching(self) -> list[Seen]:
        """The requests the current script applied to (faulted or forwarded)."""
        with self.lock:
            return [s for s in self.seen if re.search(self.match, f"{s.method} {s.path}")]

    def app(self) -> FastAPI:
        client = httpx.AsyncClient(base_url=self.upstream.rstrip("/"), timeout=60)

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            yield
            await client.aclose()  # no connection to the upstream outlives the proxy

        app = FastAPI(lifespan=lifespan)

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "LIST"])
        async def forward(path: str, request: Request) -> Response:
            body = await request.body()
            target = "/" + path
            with self.lock:
                fault = None
                if time.monotonic() < self.down_until:
                    fault = Fault(status=self.down_status, body='{"error": "injected outage"}')
                elif re.search(self.match, f"{request.method} {target}") and self.faults:
                    fault = self.faults.pop(0)
                headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
                self.seen.append(Seen(request.method, target, time.monotonic(), headers, body, fault))
            if fault is not None and fault.delay:
                await asyncio.sleep(fault.delay)
            if fault is not None and fault.status:
                extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return Response(fault.body, status_code=fault.status, headers=extra, media_type="application/json")
            answer = await client.request(
                request.method, target, params=list(request.query_params.multi_items()), content=body, headers=headers
            )
            dropped = HOP_HEADERS | {"content-encoding"}
            out_headers = {k: v for k, v in answer.headers.items() if k.lower() not in dropped}
            return Response(answer.content, status_code=answer.status_code, headers=out_headers)

        return app


@contextmanager
def fault_proxy(upstream: str) -> Iterator[tuple[FaultProxy, str]]:
    """Start a proxy in front of ``upstream``; yields the proxy and its URL."""
    proxy = FaultProxy(upstream)
    server = BackgroundServer(proxy.app()).start()
    try:
        yield proxy, server.url
    finally:
        server.stop()
