"""A webhook process (aisoar/ingress/processes.py): accepts on the ingress port the main process
bound, takes ``POST /webhooks/{source}`` as the main process would (the same handler: every
check, the inbox, then 202), relays what it stored to the main process, and passes every other
request on to the main process over its Unix socket.

Started by ``aisoar serve`` only; its settings are read as the main process read them (the same
environment and working directory).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import signal
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from aisoar.config import get_settings
from aisoar.ingress.accepting import InboxWriter
from aisoar.ingress.sources import load_sources
from aisoar.ingress.webhooks import CLOSE, WebhookFastPath, internal_error, problem, read_limited, webhook_handler
from aisoar.models import Alert
from aisoar.store import Store

log = logging.getLogger("aisoar.ingress")

RELAY_BACKLOG = 4 << 20  # bytes unsent to the main process beyond which alert ids are left to its upkeep
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"te", b"upgrade"}
# This process's server writes its own framing, date and server headers.
NOT_RELAYED_BACK = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "date",
    "server",
}
MAIN = "http://aisoar-main"


class MainProcess:
    """The main process as this process sees it: the ``Intake`` of the webhook handler, and the
    other end of the relay. What one turn of the event loop stored and counted goes in one write."""

    def __init__(self) -> None:
        self.full = False
        self._writer: asyncio.StreamWriter | None = None
        self._ids: list[str] = []
        self._counts: Counter[tuple[str, str]] = Counter()
        self._flush_due = False
        self._left: int = 0  # alert ids left to the main process's upkeep (the relay was backed up)

    async def connect(self, relay: socket.socket, gone: Callable[[], None]) -> None:
        reader, self._writer = await asyncio.open_connection(sock=relay)
        self._listening = asyncio.create_task(self._listen(reader, gone))

    async def _listen(self, reader: asyncio.StreamReader, gone: Callable[[], None]) -> None:
        """Until the relay ends: closed (the main process stops this process), or reset (it
        died with lines of this process unread, which Linux reports as a reset, not an end)."""
        try:
            while line := await reader.readline():
                try:
                    self.full = bool(json.loads(line)["full"])
                except (ValueError, KeyError, TypeError):
                    log.error("the main process sent a line that is not a relay message; ignored")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            log.warning("the relay to the main process ended (%s): this webhook process stops", type(exc).__name__)
        finally:
            gone()

    def offer(self, alert: Alert) -> bool:
        self._ids.append(alert.id)
        self._later()
        return True

    def count(self, source: str, outcome: str, amount: int) -> None:
        self._counts[(source, outcome)] += amount
        self._later()

    def _later(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_due = False
        writer = self._writer
        if writer is None or writer.is_closing():
            return
        lines = b""
        if self._ids:
            if writer.transport.get_write_buffer_size() < RELAY_BACKLOG:
                lines += json.dumps({"alerts": self._ids}).encode() + b"\n"
            else:  # they wait in the inbox: the main process's upkeep queues them in seconds
                self._left += len(self._ids)
            self._ids = []
        if self._counts:
            counts = [[source, outcome, n] for (source, outcome), n in self._counts.items()]
            lines += json.dumps({"counts": counts}).encode() + b"\n"
            self._counts.clear()
        if lines:
            writer.write(lines)

    async def close(self) -> None:
        self.flush()
        if self._writer is not None and not self._writer.is_closing():
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        if self._left:
            log.warning("%d stored alerts were left to the main process's upkeep (its relay was backed up)", self._left)


class PassedOn:
    """Every request but a webhook, passed on to the main process and its answer passed back."""

    def __init__(self, main_socket: str, body_limit: int) -> None:
        self.body_limit = body_limit
        self.client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=main_socket), timeout=60)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await read_limited(request, self.body_limit)
        if body is None:
            answer: Response = problem(413, f"body larger than {self.body_limit} bytes", headers=CLOSE)
        else:
            target = scope.get("raw_path") or scope["path"].encode()
            if scope.get("query_string"):
                target += b"?" + scope["query_string"]
            headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
            url = httpx.URL(MAIN).copy_with(raw_path=target)
            if url.raw_path != target:  # httpx resolved dot segments: the main process would see another path
                answer = problem(400, "the request's path is not in normal form (no '.' or '..' segments)")
                await answer(scope, receive, send)
                return
            try:
                reply = await self.client.request(request.method, url, headers=headers, content=body)
            except httpx.TransportError as exc:
                log.warning("the main process did not answer a passed-on request: %s", type(exc).__name__)
                answer = problem(503, "aisoar's main process does not answer; retry", headers={"Retry-After": "5"})
            else:
                kept = [(k, v) for k, v in reply.headers.multi_items() if k.lower() not in NOT_RELAYED_BACK]
                answer = Response(reply.content, status_code=reply.status_code)  # its own content-length
                answer.raw_headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in kept]
        await answer(scope, receive, send)


def build(relay: socket.socket, main_socket: str, gone: Callable[[], None]) -> Starlette:
    """The webhook process's app; ``gone`` is called when the main process's end of the relay
    closes (it stops, or it died)."""
    settings = get_settings()
    known = load_sources(settings)
    store = Store(settings.store_url)
    writer = InboxWriter(store)
    main = MainProcess()
    receive = webhook_handler(settings, known, writer, main, main.count)
    passed_on = PassedOn(main_socket, settings.ingress_max_body_bytes)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await main.connect(relay, gone)
        try:
            yield
        finally:
            await run_in_threadpool(writer.stop)
            await main.close()
            await passed_on.client.aclose()

    app = Starlette(
        routes=[Route("/webhooks/{source_name}", receive, methods=["POST"]), Mount("/", app=passed_on)],
        exception_handlers={Exception: internal_error},
        lifespan=lifespan,
    )
    app.add_middleware(WebhookFastPath, handler=receive)
    return app


class _Server(uvicorn.Server):
    """Stopped by the main process only (its end of the relay closes), never by a signal: Ctrl-C
    in a terminal and a service manager's stop signal the whole process group, and the main
    process stops its webhook processes first, then its dispatch workers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aisoar-webhook-process", description=__doc__)
    parser.add_argument("--listen-fd", type=int, required=True, help="the ingress port's socket, bound by aisoar serve")
    parser.add_argument("--relay-fd", type=int, required=True, help="this process's end of the relay")
    parser.add_argument("--main-socket", required=True, help="the main process's Unix socket")
    args = parser.parse_args(argv)
    listener = socket.socket(fileno=args.listen_fd)
    relay = socket.socket(fileno=args.relay_fd)
    server: _Server | None = None

    def gone() -> None:  # stop taking connections, answer what was taken, end
        if server is not None:
            server.should_exit = True

    app = build(relay, args.main_socket, gone)
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    # Started with SIGINT and SIGTERM blocked (aisoar/ingress/processes.py): ignored from here
    # on, one that arrived meanwhile is dropped.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    gc.collect()  # what start-up made lives as long as the process (see cli/main.py)
    gc.freeze()
    server.run(sockets=[listener])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
