"""Fuzz the webhook ingress over real HTTP: thousands of signed, mutated deliveries.

Starts the real app (``create_app``) in uvicorn on a free loopback port, with the shipped
sources (rate limits raised so that every request reaches the parser), a temporary data
dir and a recording launcher (no Prefect). Then posts ``--count`` requests from a pool of
``--workers`` threads: mutated example payloads, correctly signed, to every source
(generic, alertmanager, github, ocsf, llm-guard, litellm-guardrail, falco), and
unsigned, badly signed, oversized, wrong content type, deeply nested and duplicate (the
same delivery several times at the same instant) requests.

Checks: no 5xx; no 4xx answer repeats 12 characters or more of a string of the body;
/healthz answers afterwards; every accepted alert reads back from the store and is
dispatched; every incident reads back and holds only accepted alerts. Exit code 1 if any
check fails. The figures are printed beside the previous run's (``bench/fuzz_ingress.last.json``),
which this run then replaces.

Usage: python bench/fuzz_ingress.py [--count 10000] [--seed N] [--workers 8] [--keep]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = Path(tempfile.mkdtemp(prefix="aisoar-fuzz-"))
sys.path.insert(0, str(ROOT))
os.environ.update(
    {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_HOME": str(WORK / "prefect-client"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
)

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from aisoar.config import Settings  # noqa: E402
from aisoar.ingress.adapters import SCHEMA_NAMES  # noqa: E402
from aisoar.ingress.app import create_app  # noqa: E402
from aisoar.ingress.auth import Scheme, sender_headers, signed_headers  # noqa: E402
from aisoar.ingress.dispatch import Dispatcher, DispatchResult  # noqa: E402
from aisoar.ingress.mapping import ENTITY_MODELS  # noqa: E402
from aisoar.ingress.sources import Source  # noqa: E402
from aisoar.models import Alert  # noqa: E402
from aisoar.specs import load_specs  # noqa: E402
from aisoar.store import Store  # noqa: E402
from aisoar.store.schema import inbox  # noqa: E402
from sandbox.serving import BackgroundServer  # noqa: E402
from tasks import catalog  # noqa: E402
from tests import hostile  # noqa: E402

LAST = HERE / "fuzz_ingress.last.json"
EXAMPLES = ROOT / "examples"
SOURCES: dict[str, list[Path]] = {
    "generic": sorted((EXAMPLES / "alerts").glob("*.json")),
    "alertmanager": [EXAMPLES / "sources/alertmanager-leaked-key.json"],
    "github": [EXAMPLES / "sources/github-secret-scanning-created.json"],
    "ocsf": [EXAMPLES / "sources/ocsf-jailbreak-finding.json"],
    "llm-guard": [EXAMPLES / "sources/llm-guard-prompt-injection.json"],
    "litellm-guardrail": [EXAMPLES / "sources/litellm-guardrail-blocked.json"],
    "falco": [EXAMPLES / "sources/falco-shell-in-agent.json"],
}
PAYLOADS = {name: [json.loads(p.read_text(encoding="utf-8")) for p in paths] for name, paths in SOURCES.items()}
ALL_PAYLOADS = [payload for payloads in PAYLOADS.values() for payload in payloads]
PING = json.loads((EXAMPLES / "sources/github-ping.json").read_text(encoding="utf-8"))
VOCABULARY = (
    hostile.AISOAR_WORDS | set(SCHEMA_NAMES) | {"secret_scanning_alert", "direct_prompt_injection", "application/json"}
)
TRICKY = [
    "",
    " ",
    "\n",
    "\u0130" * 64,
    "x" * 65,
    "x" * 129,
    "x" * 257,
    "x" * 501,
    "x" * 1025,
    "a" * 64,
    "line one\nline two\r\n\tthree",
    "zero\u200bwidth\u200d\ufeffjoin",
    "bidi \u202eevil\u202c \u2066isolate\u2069",
    "{labels.alertname}",
    "<script>alert(1)</script>",
    "\U0001f600" * 50,
    "2026-12-03T06:40:00Z",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00Z",
    "1764744000",
    "false",
    "blocked",
    "resolved",
    "critical",
    "api_abuse",
    "llm_api_key",
    "3",
]
ODD_CHARS = (
    "\n\r\t\u200b\u200c\u200d\ufeff\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u00a0\u0130\U0001f600\\\"'"
)


# Every entity type: its fields (an LLM key as a sender reports it, with its secret) and those required.
ENTITY_FIELDS_BY_TYPE = [
    (kind, hostile.entity_fields(kind), hostile.required_fields(kind)) for kind in sorted(ENTITY_MODELS)
]


# -- what a request is -------------------------------------------------------------------


@dataclass
class Planned:
    kind: str
    source: str
    body: bytes
    headers: dict[str, str]
    copies: int = 1  # > 1: sent that many times at the same instant
    chunked: bool = False


@dataclass
class Answer:
    kind: str
    source: str
    status: int
    body: bytes
    text: str
    group: int


@dataclass
class Tally:
    answers: list[Answer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)


# -- mutations ---------------------------------------------------------------------------


class Mutator:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def secret(self) -> str:
        kind = self.rng.randrange(4)
        text = "".join(self.rng.choices(hostile.ALNUM, k=40))
        return ["sk-proj-" + text, "sk-ant-api03-" + text, "ghp_" + text[:36], "aws_secret_access_key=" + text][kind]

    def text(self) -> str:
        rng = self.rng
        choice = rng.randrange(8)
        if choice == 0:
            return rng.choice(TRICKY)
        if choice == 1:
            return self.secret()
        if choice == 2:
            return "".join(rng.choices(ODD_CHARS + hostile.ALNUM, k=rng.randrange(1, 40)))
        if choice == 3:
            high = 0x2FFFF if rng.random() < 0.2 else 0xD7FF  # now and then an unpaired surrogate
            return "".join(chr(rng.randrange(0x20, high)) for _ in range(rng.randrange(1, 30)))
        if choice == 4:
            return rng.choice(hostile.ALNUM) * rng.choice([255, 256, 257, 1024, 1025, 5000, 20_000, 20_001])
        if choice == 5:
            return f"{self.text_plain()} {self.secret()} {self.text_plain()}"
        if choice == 6:
            return rng.choice(sorted(VOCABULARY))
        return self.text_plain()

    def text_plain(self) -> str:
        return "".join(self.rng.choices(hostile.ALNUM + " -_.:/", k=self.rng.randrange(0, 30)))

    def number(self) -> Any:
        rng = self.rng
        return rng.choice(
            [
                0,
                -1,
                3,
                99,
                2**63 - 1,
                2**63,
                -(2**63),
                10**30,
                rng.randrange(-(10**12), 10**12),
                rng.uniform(-1e308, 1e308),
                5e-324,
                -0.0,
                1e308,
            ]
        )

    def leaf(self) -> Any:
        choice = self.rng.randrange(6)
        return (
            [None, True, False][self.rng.randrange(3)] if choice == 0 else self.number() if choice == 1 else self.text()
        )

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        choice = rng.randrange(10)
        if choice < 5 or depth > 2:
            return self.leaf()
        if choice == 5:
            return [self.value(depth + 1) for _ in range(rng.randrange(0, 6))]
        if choice == 6:
            return {self.key(): self.value(depth + 1) for _ in range(rng.randrange(0, 6))}
        if choice == 7:
            return hostile.nest(self.leaf(), self.depth())
        if choice == 8:
            return [self.leaf()] * rng.randrange(20, 61)
        return rng.choice(sorted(VOCABULARY))

    def depth(self) -> int:
        """How deep to nest a value: mostly within the limit, sometimes just over it, up to 60."""
        return self.rng.choice([1, 2, 3, 5, 8, 13, 20, 25, 29, 30, 31, 32, 33, 40, 60])

    def key(self) -> str:
        choice = self.rng.randrange(4)
        if choice == 0:
            return self.rng.choice(sorted(SCHEMA_NAMES))
        if choice == 1:
            return self.text()[:300]
        return self.text_plain()

    def entity_value(self) -> Any:
        rng = self.rng
        choice = rng.randrange(4)
        if choice == 0:
            return rng.choice(hostile.BLANKS)
        if choice == 1:
            return rng.choice(["openai", " OpenAI ", "key_1", "proj_1", "a" * 64, "A" * 64, "198.51.100.23"])
        return self.text_plain() if choice == 2 else self.value()

    def generic_document(self) -> dict[str, Any]:
        """A generic alert made up from its schema: typed entities with fields at their edges."""
        rng = self.rng
        entities = []
        for _ in range(rng.randrange(0, 4)):
            kind = rng.choice(ENTITY_FIELDS_BY_TYPE)
            fields = {name: self.entity_value() for name in kind[1] if rng.random() < 0.5 or name in kind[2]}
            entities.append({"type": kind[0], **fields})
        document: dict[str, Any] = {"id": self.text_plain() or "x", "title": self.text(), "entities": entities}
        for name in ("description", "severity", "incident_type", "state", "occurred_at", "fingerprint"):
            if rng.random() < 0.3:
                document[name] = rng.choice([self.text(), rng.choice(sorted(VOCABULARY)), self.value()])
        if rng.random() < 0.3:
            document["labels"] = {self.key(): self.text() for _ in range(rng.randrange(0, 6))}
        return document

    def mutate(self, document: Any, paths: list[str]) -> Any:
        rng = self.rng
        holder: dict[str, Any] = {"root": copy.deepcopy(document)}
        for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4, 6, 8])):
            op = rng.choice(
                ["target", "target", "blank", "replace", "drop", "add", "wrap", "nest", "stringify", "repeat"]
            )
            if op == "blank":  # a text at its edges: empty, blank, longer once lower-cased, just too long
                texts = [(c, k) for c, k in hostile.slots(holder["root"]) if isinstance(c[k], str)]
                if texts:
                    container, key = rng.choice(texts)
                    container[key] = rng.choice(hostile.BLANKS)
                continue
            if op == "target" and paths:
                value = rng.choice(TRICKY) if rng.random() < 0.4 else self.value()
                holder["root"] = hostile.set_path(holder["root"], rng.choice(paths), value)
                continue
            container, key = rng.choice([(holder, "root"), *hostile.slots(holder["root"])])
            if op == "replace":
                container[key] = self.value()
            elif op == "drop" and container is not holder:
                del container[key]
            elif op == "add":
                target = container[key]
                if isinstance(target, dict):
                    target[self.key()] = self.value()
                elif isinstance(target, list):
                    target.insert(rng.randrange(len(target) + 1), self.value())
            elif op == "wrap":
                container[key] = rng.choice([[container[key]], {"k": container[key]}])
            elif op == "nest":
                container[key] = hostile.nest(container[key], self.depth())
            elif op == "stringify":
                container[key] = json.dumps(container[key])
            elif op == "repeat":
                container[key] = [copy.deepcopy(container[key]) for _ in range(rng.randrange(2, 61))]
        return holder["root"]

    def damage(self, body: bytes) -> bytes:
        rng = self.rng
        choice = rng.randrange(20)
        if choice == 0 and body:
            return body[: rng.randrange(len(body))]
        if choice == 1 and body:
            at = rng.randrange(len(body))
            return body[:at] + bytes([rng.randrange(256)]) + body[at + 1 :]
        if choice == 2:
            return body + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        if choice == 3:
            return b"\xef\xbb\xbf" + body
        return body


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def read_paths(source: Source) -> list[str]:
    """Where the source's format reads the payload (mutations there reach the most code)."""
    mapping = source.format.mapping
    if mapping is None:
        entity = ["type", "provider", "key_id", "project_id", "secret", "key_sha256", "gateway_key_hash", "name"]
        entity += ["version", "store", "instance", "agent", "session_id", "user_id", "ip", "credential_id", "principal"]
        return [
            *("id", "title", "description", "severity", "incident_type", "state", "occurred_at", "fingerprint"),
            *("labels", "labels.severity", "notes", "notes.0", "entities", "entities.0", "entities.1"),
            *(f"entities.{i}.{name}" for i in (0, 1) for name in entity),
        ]
    templates = json.dumps(mapping.model_dump(by_alias=True)) + json.dumps(list(mapping.when))
    found = {p.strip() for p in _PLACEHOLDER.findall(templates)} | set(mapping.labels_from)
    prefix = {None: "", "$": "0."}.get(mapping.items, f"{mapping.items}.0.")
    return sorted(p.removeprefix("$.") if p.startswith("$.") else prefix + p for p in found if p)


# -- the plan ----------------------------------------------------------------------------


def headers_for(source: Source, body: bytes, rng: random.Random) -> dict[str, str]:
    assert source.credentials is not None
    headers = sender_headers(source.credentials, body)
    if source.credentials.scheme is Scheme.github_hmac:
        headers["X-GitHub-Event"] = "secret_scanning_alert"
        headers["X-GitHub-Delivery"] = str(uuid.UUID(int=rng.getrandbits(128)))
    return headers


def plan(count: int, rng: random.Random, sources: dict[str, Source], max_body: int) -> Iterator[Planned]:
    mutator = Mutator(rng)
    paths = {name: read_paths(sources[name]) for name in PAYLOADS}
    names = sorted(PAYLOADS)
    kinds = ["signed"] * 70 + ["unsigned"] * 5 + ["bad-signature"] * 6 + ["oversized"] * 3
    kinds += ["wrong-content-type"] * 5 + ["deep"] * 4 + ["duplicate"] * 4 + ["other-event"] * 2 + ["unknown-source"]
    sent = 0
    while sent < count:
        kind = rng.choice(kinds)
        name = "github" if kind == "other-event" else rng.choice(names)
        source = sources[name]
        own = PAYLOADS[name]
        base = rng.choice(own if rng.random() < 0.8 else ALL_PAYLOADS)
        if name == "generic" and rng.random() < 0.3:
            base = mutator.generic_document()
        body = mutator.damage(hostile.encode(mutator.mutate(base, paths[name])))
        headers = headers_for(source, body, rng)
        if kind == "unsigned":
            headers = {"Content-Type": "application/json"}
        elif kind == "bad-signature":
            headers = bad_signature(source, body, rng)
        elif kind == "oversized":
            body = hostile.encode(
                {"id": "big", "title": "big", "description": "x" * (max_body + rng.randrange(1, 4096))}
            )
            headers = headers_for(source, body, rng)
            yield Planned(kind, name, body, headers, chunked=rng.random() < 0.5)
            sent += 1
            continue
        elif kind == "wrong-content-type":
            headers["Content-Type"] = rng.choice(
                ["text/plain", "application/xml", "multipart/form-data; boundary=x", "application/jsonx", ""]
            )
        elif kind == "deep":
            depth = rng.choice([33, 40, 100, 1000, 5000, 100_000])
            body = rng.choice([b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth, b"[" * depth])
            if rng.random() < 0.5 and name == "generic":
                body = hostile.encode(
                    {"id": "deep", "title": "deep", "labels": hostile.nest("x", depth if depth < 200 else 60)}
                )
            headers = headers_for(source, body, rng)
        elif kind == "other-event":  # GitHub events other than secret scanning: acknowledged, not stored
            event = rng.choice(["ping", "push", "", "secret_scanning_alert_location"])
            body = hostile.encode(PING) if event == "ping" else body
            headers = headers_for(source, body, rng) | {"X-GitHub-Event": event}
        elif kind == "unknown-source":
            name = rng.choice(["nope", "GENERIC", "generic.yaml", "x" * 300])
        copies = rng.randrange(2, 5) if kind == "duplicate" else 1
        yield Planned(kind, name, body, headers, copies=copies)
        sent += copies


def bad_signature(source: Source, body: bytes, rng: random.Random) -> dict[str, str]:
    """The headers of a sender that gets authentication wrong, in one of several ways."""
    credentials = source.credentials
    assert credentials is not None
    wrong = dataclasses.replace(credentials, secrets=("wrong-secret-0123456789",))
    choice = rng.randrange(4)
    if choice == 1 and credentials.scheme in (Scheme.aisoar_hmac, Scheme.github_hmac):
        return sender_headers(credentials, body + b" ")  # signed for another body
    if choice == 2 and credentials.scheme is Scheme.aisoar_hmac:
        return signed_headers(credentials.secrets[0], body, timestamp=int(time.time()) - 3600)  # a replay
    if choice == 3:  # the right header names, garbage values
        return {
            name: rng.choice(["", "Bearer", "v1=00", "sha256=zz", "Basic !!", "x" * 5000])
            for name in sender_headers(credentials, body)
        } | {"Content-Type": "application/json"}
    return sender_headers(wrong, body)


# -- sending -----------------------------------------------------------------------------


def send(client: httpx.Client, url: str, item: Planned, group: int, tally: Tally) -> None:
    def post() -> None:
        content: Any = item.body
        if item.chunked:
            content = iter([item.body[i : i + 65536] for i in range(0, len(item.body), 65536)])
        try:
            response = client.post(f"{url}/webhooks/{item.source}", content=content, headers=item.headers)
            tally.add(Answer(item.kind, item.source, response.status_code, item.body, response.text, group))
        except httpx.HTTPError as exc:  # the server closed the connection on an oversized body, say
            tally.add(Answer(item.kind, item.source, -1, item.body, f"{type(exc).__name__}: {exc}", group))

    if item.copies == 1:
        post()
        return
    barrier = threading.Barrier(item.copies)

    def at_once() -> None:
        barrier.wait(timeout=10)
        post()

    threads = [threading.Thread(target=at_once) for _ in range(item.copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# Text the answers may hold for reasons of their own: aisoar's vocabulary, and the example
# payloads' own strings (an English phrase of an example may also be in an error message).
_KNOWN_GRAMS = hostile.known_grams([*VOCABULARY, *hostile.strings_of([*ALL_PAYLOADS, PING])])


# -- the app -----------------------------------------------------------------------------


class RecordingDispatcher(Dispatcher):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.errors: list[str] = []

    def dispatch(self, alert: Alert) -> DispatchResult | None:
        try:
            return super().dispatch(alert)
        except Exception as exc:
            self.errors.append(f"{alert.id}: {type(exc).__name__}: {exc}"[:500])
            raise


class Unexpected(logging.Handler):
    """The server's log: the app's unexpected errors (the 500s) by exception type, the first
    tracebacks, and uvicorn's warnings (an HTTP request it could not read, say) by message."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.types: Counter[str] = Counter()
        self.warnings: Counter[str] = Counter()
        self.tracebacks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "aisoar.ingress" and str(record.msg).startswith("unexpected error"):
            self.types[str(record.args[-1]) if isinstance(record.args, tuple) else "?"] += 1
        elif record.exc_info and len(self.tracebacks) < 3:
            self.tracebacks.append(logging.Formatter().formatException(record.exc_info)[-3000:])
        elif record.levelno < logging.ERROR:
            self.warnings[f"{record.name}: {record.getMessage()[:100]}"] += 1


# -- the run -----------------------------------------------------------------------------


def wait_dispatched(store: Store, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with store.engine.connect() as conn:
            pending = conn.execute(sa.select(sa.func.count()).select_from(inbox).where(inbox.c.status == "pending"))
            if not pending.scalar():
                return
        time.sleep(0.2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    secrets = {name: f"fuzz-{name}-secret-{uuid.uuid4().hex}" for name in PAYLOADS}
    values: dict[str, Any] = {f"source_{name.replace('-', '_')}_secret": secret for name, secret in secrets.items()}
    values |= {
        "data_dir": WORK / "data",
        "sources_dir": hostile.unthrottled_sources(WORK / "sources"),
        "api_token": "fuzz-api-token-0123456789",
        "webhook_secrets": {},
    }
    settings = Settings(_env_file=None, **values)  # no .env: only what this script says
    store = Store(settings.store_url)
    specs = [item.spec for item in load_specs(settings.specs_dir, catalog())]
    recorder = hostile.Recorder(store)
    dispatcher = RecordingDispatcher(store, specs, recorder, timedelta(hours=1))
    app = create_app(settings, store, dispatcher)
    server = BackgroundServer(app)  # configures uvicorn's logging: take it over after
    unexpected = Unexpected()
    for name in ("aisoar.ingress", "aisoar.dispatch", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.addHandler(unexpected)  # counted and kept, not printed
        logger.propagate = False
    server.start()
    rng = random.Random(args.seed)
    tally = Tally()
    started = time.monotonic()
    try:
        # Idle connections are dropped before uvicorn's keep-alive timeout (5 s) closes them, so
        # that a request never races the server's close (a "disconnected" that is no answer of the app).
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32, keepalive_expiry=2.0)
        with httpx.Client(timeout=60, limits=limits) as client, ThreadPoolExecutor(args.workers) as pool:
            futures = [
                pool.submit(send, client, server.url, item, group, tally)
                for group, item in enumerate(plan(args.count, rng, app.state.sources, settings.ingress_max_body_bytes))
            ]
            for future in futures:
                future.result()
            sent_seconds = time.monotonic() - started
            healthz = client.get(f"{server.url}/healthz", timeout=10)
            healthy = healthz.status_code == 200 and healthz.json() == {"status": "ok"}
        accepted: set[str] = set()
        for answer in tally.answers:
            if answer.status in (200, 202):
                accepted |= set(json.loads(answer.text).get("alert_ids", []))
        wait_dispatched(store, timeout=300)
        figures = check(store, tally, accepted, recorder, dispatcher)
    finally:
        server.stop()
    figures |= {
        "seed": args.seed,
        "count": len(tally.answers),
        "workers": args.workers,
        "seconds": round(time.monotonic() - started, 1),
        "send_seconds": round(sent_seconds, 1),
        "healthz_after": healthy,
        "unexpected_errors": dict(unexpected.types),
        "tracebacks": unexpected.tracebacks,
        "server_warnings": dict(unexpected.warnings.most_common(10)),
    }
    return figures


def echo_place(text: str, pieces: list[str]) -> str:
    """Where in an answer the echo is: the detail entry's location and type, or the field."""
    try:
        answer = json.loads(text)
    except ValueError:
        return "?"
    detail = answer.get("detail") if isinstance(answer, dict) else None
    for entry in detail if isinstance(detail, list) else []:
        if isinstance(entry, dict) and any(p in json.dumps(entry, ensure_ascii=False) for p in pieces):
            return f"detail msg of {entry.get('type')} at {'.'.join(map(str, entry.get('loc', [])))}"
    return "detail" if any(p in json.dumps(detail, ensure_ascii=False) for p in pieces) else "error"


def reason(text: str) -> str:
    """What an answer says, without what the sender sent: its error or status, and the kind of detail."""
    try:
        answer = json.loads(text)
    except ValueError:
        return text[:40]
    if not isinstance(answer, dict):
        return "?"
    detail = answer.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        detail = f"{detail[0].get('type')} at {'.'.join(map(str, detail[0].get('loc', [])))[:40]}"
    elif isinstance(detail, str):
        detail = re.sub(r"\d+", "N", detail)[:60]
    return f"{answer.get('error') or answer.get('status')}: {detail or ''}"[:110]


def check(
    store: Store, tally: Tally, accepted: set[str], recorder: hostile.Recorder, dispatcher: RecordingDispatcher
) -> dict[str, Any]:
    by_status = Counter(str(a.status) for a in tally.answers)
    by_source: dict[str, Counter[str]] = {}
    by_kind: dict[str, Counter[str]] = {}
    for answer in tally.answers:
        by_source.setdefault(answer.source if answer.source in PAYLOADS else "(unknown)", Counter())[
            str(answer.status)
        ] += 1
        by_kind.setdefault(answer.kind, Counter())[str(answer.status)] += 1
    server_errors = [a for a in tally.answers if a.status >= 500 or a.status < 0]
    dropped = sum(1 for a in tally.answers if a.status < 0)
    reasons: Counter[str] = Counter()
    for answer in tally.answers:
        reasons[f"{answer.status} {reason(answer.text)}"] += 1
    echoes: list[dict[str, Any]] = []
    not_json = 0
    for answer in tally.answers:
        if 400 <= answer.status < 500:
            try:
                error = json.loads(answer.text).get("error")
            except (ValueError, AttributeError):
                error = None
            if not isinstance(error, str) or not error:
                not_json += 1
            repeated = hostile.echoed(answer.body, answer.text, _KNOWN_GRAMS)
            if repeated:
                echoes.append(
                    {
                        "status": answer.status,
                        "source": answer.source,
                        "where": echo_place(answer.text, repeated),
                        "pieces": sorted(set(repeated))[:3],
                        "answer": answer.text[:1000],
                    }
                )
    readback_failures: list[str] = []
    undispatched = 0
    incident_ids: set[str] = set()
    for alert_id in sorted(accepted):
        try:
            alert = store.get_alert(alert_id)
            assert Alert.model_validate_json(alert.model_dump_json()) == alert
            status = store.alert_status(alert_id)
            assert status is not None
        except Exception as exc:
            readback_failures.append(f"{alert_id}: {type(exc).__name__}: {exc}"[:300])
            continue
        if status[0] != "dispatched":
            undispatched += 1
        if status[1]:
            incident_ids.add(status[1])
        elif alert.state == "firing":
            undispatched += 1
    with store.engine.connect() as conn:
        inbox_rows = int(conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar() or 0)
    incidents = store.incident_counts()
    all_incidents = [i.id for i in store.list_incidents(limit=1_000_000)]
    incident_failures: list[str] = []
    foreign_alerts = 0
    launched = {incident for incident, _ in recorder.launched}
    unlaunched = 0
    for incident_id in all_incidents:
        try:
            incident = store.get_incident(incident_id)
        except Exception as exc:
            incident_failures.append(f"{incident_id}: {type(exc).__name__}: {exc}"[:300])
            continue
        foreign_alerts += sum(1 for a in incident.alert_ids if a not in accepted)
        if incident_id not in launched:
            unlaunched += 1
    groups: dict[int, list[Answer]] = {}
    for answer in tally.answers:
        groups.setdefault(answer.group, []).append(answer)
    duplicate_groups = [g for g in groups.values() if len(g) > 1]
    inconsistent = 0
    for group in duplicate_groups:
        created = [a for a in group if a.status == 202]
        ids = {json.loads(a.text).get("alert_id") for a in group if a.status in (200, 202) and "alert_id" in a.text}
        if len(created) > 1 or len(ids) > 1:
            inconsistent += 1
    return {
        "by_status": dict(sorted(by_status.items())),
        "by_source": {k: dict(sorted(v.items())) for k, v in sorted(by_source.items())},
        "by_kind": {k: dict(sorted(v.items())) for k, v in sorted(by_kind.items())},
        "by_reason": dict(reasons.most_common(15)),
        "server_errors": len(server_errors) - dropped,
        "dropped": dropped,
        "server_error_samples": [
            {
                "status": a.status,
                "source": a.source,
                "kind": a.kind,
                "answer": a.text[:200],
                "bytes": len(a.body),
                "body": a.body[:300].decode("utf-8", "replace"),
            }
            for a in server_errors[:5]
        ],
        "answers_not_json_error": not_json,
        "echoes": len(echoes),
        "echo_samples": echoes[:100],
        "alerts_accepted": len(accepted),
        "inbox_rows": inbox_rows,
        "readback_failures": readback_failures[:5],
        "readback_failed": len(readback_failures),
        "undispatched": undispatched,
        "dispatch_errors": len(dispatcher.errors),
        "dispatch_error_samples": dispatcher.errors[:5],
        "incidents": sum(incidents.values()),
        "incident_read_failed": len(incident_failures),
        "incident_alerts_not_accepted": foreign_alerts,
        "incidents_without_a_launch": unlaunched,
        "duplicate_groups": len(duplicate_groups),
        "duplicate_groups_inconsistent": inconsistent,
    }


CHECKS: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
    ("no 5xx", lambda f: f["server_errors"] == 0),
    ("no connection dropped without an answer", lambda f: f.get("dropped", 0) == 0),
    ("every 4xx is JSON with an error string", lambda f: f["answers_not_json_error"] == 0),
    ("no 4xx echoes >= 12 chars of the body", lambda f: f["echoes"] == 0),
    ("/healthz answers after the run", lambda f: f["healthz_after"]),
    ("every accepted alert reads back", lambda f: f["readback_failed"] == 0),
    ("inbox holds only accepted alerts", lambda f: f["inbox_rows"] == f["alerts_accepted"]),
    ("every accepted alert was dispatched", lambda f: f["undispatched"] == 0 and f["dispatch_errors"] == 0),
    ("every incident reads back", lambda f: f["incident_read_failed"] == 0),
    ("incidents hold only accepted alerts", lambda f: f["incident_alerts_not_accepted"] == 0),
    ("every incident started a playbook", lambda f: f["incidents_without_a_launch"] == 0),
    ("a duplicate is stored once", lambda f: f["duplicate_groups_inconsistent"] == 0),
]


def report(figures: dict[str, Any], previous: dict[str, Any] | None) -> bool:
    def row(label: str, now: Any, before: Any = "") -> None:
        print(f"  {label:44} {now!s:>14} {before!s:>14}")

    old = previous or {}
    print(f"\nseed {figures['seed']}, {figures['workers']} workers; previous: {LAST.name if previous else 'none'}")
    row("", "this run", "previous")
    row("requests", figures["count"], old.get("count", ""))
    row("seconds (sending)", figures["send_seconds"], old.get("send_seconds", ""))
    row("seconds (in all, with checks)", figures["seconds"], old.get("seconds", ""))
    rate = round(old["count"] / old["send_seconds"]) if old else ""
    row("requests / s", round(figures["count"] / figures["send_seconds"]), rate)
    print("\n  by status")
    for status in sorted(set(figures["by_status"]) | set(old.get("by_status", {}))):
        row(status, figures["by_status"].get(status, 0), old.get("by_status", {}).get(status, ""))
    for title, key in (("by source", "by_source"), ("by kind of request", "by_kind")):
        print(f"\n  {title} (status: count)")
        for name in sorted(set(figures[key]) | set(old.get(key, {}))):
            now = figures[key].get(name, {})
            before = old.get(key, {}).get(name, {})
            now_text = " ".join(f"{s}:{n}" for s, n in now.items())
            print(f"  {name:22} {now_text:52} | {' '.join(f'{s}:{n}' for s, n in before.items())}")
    print("\n  the most frequent answers (this run)")
    for text, number in figures["by_reason"].items():
        print(f"  {number:>6}  {text}")
    print()
    for label, key in (
        ("5xx answers", "server_errors"),
        ("connections dropped without an answer", "dropped"),
        ("4xx answers echoing the body", "echoes"),
        ("4xx answers without a JSON error", "answers_not_json_error"),
        ("/healthz after the run", "healthz_after"),
        ("alerts accepted", "alerts_accepted"),
        ("inbox rows", "inbox_rows"),
        ("accepted alerts not read back", "readback_failed"),
        ("accepted alerts not dispatched", "undispatched"),
        ("dispatch errors", "dispatch_errors"),
        ("incidents", "incidents"),
        ("incidents not read back", "incident_read_failed"),
        ("incident alerts not accepted", "incident_alerts_not_accepted"),
        ("incidents without a launch", "incidents_without_a_launch"),
        ("duplicate groups (same instant)", "duplicate_groups"),
        ("duplicate groups stored twice", "duplicate_groups_inconsistent"),
    ):
        row(label, figures[key], old.get(key, ""))
    if figures["server_warnings"]:
        print(f"\n  warnings in the server's log: {figures['server_warnings']}")
    if figures["unexpected_errors"]:
        print(f"\n  unexpected errors in the app's log (500s), by type: {figures['unexpected_errors']}")
    places = Counter(e["where"] for e in figures["echo_samples"])
    if places:
        print(f"\n  where the echoes are (first {len(figures['echo_samples'])}): {dict(places)}")
    for key in ("server_error_samples", "readback_failures", "dispatch_error_samples"):
        for sample in figures[key]:
            print(f"  {key}: {json.dumps(sample, ensure_ascii=True)[:400]}")
    for traceback in figures["tracebacks"][:1]:
        print("  first traceback in the app's log:\n    " + traceback.replace("\n", "\n    "))
    print("\nchecks")
    passed = True
    for label, ok in CHECKS:
        result = bool(ok(figures))
        passed &= result
        print(f"  {'ok  ' if result else 'FAIL'} {label}")
    return passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir (the store) for a look")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    print(
        f"fuzzing the ingress: {args.count} requests, seed {args.seed} (repeat with --seed {args.seed}); data in {WORK}"
    )
    previous = json.loads(LAST.read_text(encoding="utf-8")) if LAST.exists() else None
    try:
        figures = run(args)
    finally:
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    passed = report(figures, previous)
    figures["passed"] = passed
    LAST.write_text(json.dumps(figures, indent=2, ensure_ascii=True) + "\n", encoding="utf-8")
    print(f"\n{'all checks passed' if passed else 'SOME CHECKS FAILED'}; figures written to {LAST}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
