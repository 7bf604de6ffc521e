"""Properties of the webhook edge that hold for any input (hypothesis).

- the JSON limits (``limits.parse_json``) refuse anything only with ``BodyError``, accept
  exactly the documents within the limits, and what they accept reads back unchanged;
- every built-in format (and every source's own mapping) reads any JSON, and any mutation
  of the example payloads, into alerts that round-trip through pydantic and hold no secret
  the sender sent, or refuses it with ``BodyError`` / ``PayloadError`` only;
- the app never answers 5xx to a signed, mutated delivery, never echoes the sender's text in
  a 4xx, and every alert it accepts reads back from the store and is dispatched.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from aisoar.config import PROJECT_ROOT
from aisoar.ingress.adapters import SCHEMA_NAMES, GenericAlertIn, PayloadError, read
from aisoar.ingress.app import create_app
from aisoar.ingress.auth import sender_headers
from aisoar.ingress.builtin import Format, formats
from aisoar.ingress.dispatch import Dispatcher, DispatchResult
from aisoar.ingress.limits import MAX_DEPTH, MAX_INT, MAX_KEY, MAX_STRING, MAX_VALUES, BodyError, parse_json
from aisoar.ingress.mapping import ENTITY_MODELS
from aisoar.ingress.sources import Source, read_spec
from aisoar.models import Alert
from aisoar.specs import load_specs
from aisoar.store import Store
from tasks import catalog
from tests.conftest import make_settings
from tests.hostile import (
    AISOAR_WORDS,
    ALNUM,
    BLANKS,
    Recorder,
    echoed,
    encode,
    entity_fields,
    known_grams,
    nest,
    required_fields,
    set_path,
    slots,
    strings_of,
    unthrottled_sources,
)

SETTINGS = hsettings(
    deadline=None,
    database=None,  # nothing written into the tree; a failure prints its reproducer
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# -- inputs -------------------------------------------------------------------------------

EXAMPLES_DIR = PROJECT_ROOT / "examples"
SOURCE_EXAMPLES = {
    "generic": sorted((EXAMPLES_DIR / "alerts").glob("*.json")),
    "alertmanager": [EXAMPLES_DIR / "sources/alertmanager-leaked-key.json"],
    "github-secret-scanning": [
        EXAMPLES_DIR / "sources/github-secret-scanning-created.json",
        EXAMPLES_DIR / "sources/github-ping.json",
    ],
    "ocsf-detection-finding": [EXAMPLES_DIR / "sources/ocsf-jailbreak-finding.json"],
    "llm-guard": [EXAMPLES_DIR / "sources/llm-guard-prompt-injection.json"],
    "litellm-guardrail": [EXAMPLES_DIR / "sources/litellm-guardrail-blocked.json"],
    "falco": [EXAMPLES_DIR / "sources/falco-shell-in-agent.json"],
}
EXAMPLES: dict[str, list[Any]] = {
    name: [json.loads(path.read_text(encoding="utf-8")) for path in paths] for name, paths in SOURCE_EXAMPLES.items()
}
ALL_EXAMPLES = [document for documents in EXAMPLES.values() for document in documents]


def _every_format() -> dict[str, Format]:
    """The built-in formats, and the mapping of every shipped source that declares its own."""
    found = dict(formats())
    for path in sorted((PROJECT_ROOT / "sources").glob("*.y*ml")):
        spec = read_spec(path)
        if spec.mapping is not None:
            found[spec.name] = Format(spec.name, spec.mapping, title=spec.title)
    return found


FORMATS = _every_format()
B64 = ALNUM + "/+"
# The secrets this file sends, standing alone (as aisoar's detector finds them): at the start
# of a string or after a character that cannot be part of a token.
SECRET_SHAPES = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:sk-proj-[A-Za-z0-9]{40}|sk-ant-api03-[A-Za-z0-9]{40}|ghp_[A-Za-z0-9]{36})(?![A-Za-z0-9_\-])"
    r"|(?<=aws_secret_access_key=)[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=_\-])"
)


def _random_text(alphabet: str, size: int) -> st.SearchStrategy[str]:
    """High-entropy text, as a real key is (hypothesis alone prefers "000...")."""
    return st.integers(0, 2**64).map(lambda seed: "".join(random.Random(seed).choices(alphabet, k=size)))


secrets_ = st.one_of(
    _random_text(ALNUM, 40).map(lambda s: "sk-proj-" + s),
    _random_text(ALNUM, 40).map(lambda s: "sk-ant-api03-" + s),
    _random_text(ALNUM, 36).map(lambda s: "ghp_" + s),
    _random_text(B64, 40).map(lambda s: "aws_secret_access_key=" + s),
)
VOCABULARY = sorted(
    AISOAR_WORDS
    | {"false", "true", "created", "publicly_leaked", "openai_api_key", "aws_access_key_id", "Secrets", "AML.T0054"}
    | {"Jailbreak", "3", "4", "99", "model", "agent", "tool", "session", "user"}
)
DATES = [
    "2026-12-03T06:40:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-23:59",
    "9999-12-31T23:59:59.999999999+14:00",
    "2026-02-30T00:00:00Z",
    "1764744000",
    "1764744000000000000000",
    "-62135596801",
    "2026-12-03",
    "24:00",
]
TRICKY = [
    "",
    " ",
    "\n",
    "\u0130" * 64,  # 'İ'.lower() is two characters: 64 of them lower to 128
    "\u0130" * 256,
    "x" * 64,
    "x" * 65,
    "x" * 128,
    "x" * 129,
    "x" * 256,
    "x" * 257,
    "x" * 500,
    "x" * 501,
    "x" * 1024,
    "x" * 1025,
    "a" * 64,  # a hex digest
    "A" * 64,
    "line one\nline two\r\n\tthree",
    "zero\u200bwidth\u200d\ufeffjoin",
    "bidi \u202eevil\u202c \u2066isolate\u2069",
    "{labels.alertname}",
    "{$.receiver}",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "\\u0000",
    "\U0001f600" * 300,
]
strings = st.one_of(
    st.sampled_from(TRICKY),
    st.sampled_from(VOCABULARY),
    st.sampled_from(DATES),
    secrets_,
    st.text(max_size=40),
    st.text(max_size=5).map(lambda s: s * 400),
    st.tuples(st.text(max_size=20), secrets_, st.text(max_size=20)).map("".join),
    st.text(st.characters(exclude_categories=()), max_size=20),  # control characters, NUL, surrogates
)
numbers = st.one_of(
    st.sampled_from([0, 1, -1, 3, 99, 2004, MAX_INT, MAX_INT + 1, -MAX_INT - 1, 2**64, 10**30]),
    st.integers(),
    st.integers(min_value=-(10**300), max_value=10**300),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -1e308, 5e-324, -0.0, 0.5, 1.0000000000000002]),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, strings)
keys = st.one_of(st.sampled_from(sorted(SCHEMA_NAMES)), st.text(max_size=12), st.sampled_from(TRICKY[:12]))
json_values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5), max_leaves=25
)


deep = st.builds(nest, leaves, st.integers(0, 60))
replacements = st.one_of(leaves, json_values, deep, st.lists(leaves, min_size=20, max_size=60))


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
ENTITY_FIELDS = sorted(SCHEMA_NAMES - set(GenericAlertIn.model_fields) | {"type", "secret"})


def _templates(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _templates(item)]
    if isinstance(value, list):
        return [t for item in value for t in _templates(item)]
    return []


def field_paths(fmt: Format) -> list[str]:
    """The paths of the sender's payload that the format reads (where mutations matter most)."""
    if fmt.mapping is None:
        entity = [f"entities.0.{name}" for name in ENTITY_FIELDS] + [f"entities.1.{name}" for name in ENTITY_FIELDS]
        return [*GenericAlertIn.model_fields, "labels.severity", "notes.0", *entity]
    mapping = fmt.mapping.model_dump(by_alias=True)
    found = {path.strip() for template in _templates(mapping) for path in _PLACEHOLDER.findall(template)}
    found |= {path for template in fmt.mapping.when for path in _PLACEHOLDER.findall(template)}
    found |= set(fmt.mapping.labels_from)
    if fmt.name == "llm-guard":
        found |= {"scanners.PromptInjection", "scanners.Secrets", "sanitized_output", "is_valid"}
    if fmt.name == "litellm-guardrail":
        found |= {"guardrail_information.0.guardrail_name", "guardrail_information.1.guardrail_status"}
    prefix = {None: "", "$": "0."}.get(fmt.mapping.items, f"{fmt.mapping.items}.0.")
    return sorted(p.removeprefix("$.") if p.startswith("$.") else prefix + p for p in found)


field_values = st.one_of(st.sampled_from(BLANKS), strings, leaves)
# An entity's field: mostly a text that passes the ingress's first check (the one that names
# a field), at its edges (empty, blank, a hex digest, longer once lower-cased), else anything.
entity_values = st.one_of(
    st.just(""),
    st.sampled_from(BLANKS),
    st.sampled_from(["openai", " OpenAI ", "a" * 64, "A" * 64, "key_1", "198.51.100.23"]),
    st.text(max_size=20),
    secrets_,
    field_values,
)
entities = st.one_of(
    *[
        st.fixed_dictionaries(
            {"type": st.just(kind)}
            | {name: entity_values for name in entity_fields(kind) if name in required_fields(kind)},
            optional={name: entity_values for name in entity_fields(kind) if name not in required_fields(kind)},
        )
        for kind in sorted(ENTITY_MODELS)
    ],
    st.dictionaries(st.sampled_from(ENTITY_FIELDS), field_values, max_size=4),
)
generic_documents = st.fixed_dictionaries(
    {"id": strings, "title": strings},
    optional={
        "description": strings,
        "severity": st.one_of(st.sampled_from(VOCABULARY), field_values),
        "incident_type": st.one_of(st.sampled_from(VOCABULARY), field_values),
        "state": st.one_of(st.sampled_from(VOCABULARY), field_values),
        "occurred_at": st.one_of(st.sampled_from(DATES), field_values),
        "fingerprint": field_values,
        "labels": st.one_of(st.dictionaries(keys, strings, max_size=6), json_values),
        "entities": st.one_of(st.lists(entities, min_size=1, max_size=4), json_values),
        "notes": st.one_of(st.lists(strings, max_size=4), json_values),
        "extra": json_values,
    },
)


def examples_of(*names: str, weight: int = 3) -> st.SearchStrategy[Any]:
    """A format's own examples (often), or any example."""
    own = [document for name in names for document in EXAMPLES[name]]
    return st.sampled_from(own * weight + ALL_EXAMPLES)


@st.composite
def mutations(draw: st.DrawFn, documents: st.SearchStrategy[Any], paths: list[str] | None = None) -> Any:
    """A payload (an example) with random structural and value mutations; with ``paths``,
    many of them at the places the format reads."""
    holder = {"root": copy.deepcopy(draw(documents))}
    ops = ["target", "blank", "replace", "drop", "add", "wrap", "nest", "stringify", "repeat"]
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.sampled_from(ops if paths else ops[1:]))
        if op == "blank":  # a text at its edges: empty, blank, longer once lower-cased, just too long
            texts = [(c, k) for c, k in slots(holder["root"]) if isinstance(c[k], str)]
            if texts:
                container, key = draw(st.sampled_from(texts))
                container[key] = draw(st.sampled_from(BLANKS))
            continue
        if op == "target" and paths:
            value = draw(st.one_of(strings, leaves, replacements))
            holder["root"] = set_path(holder["root"], draw(st.sampled_from(paths)), value)
            continue
        container, key = draw(st.sampled_from([(holder, "root"), *slots(holder["root"])]))
        if op == "replace":
            container[key] = draw(replacements)
        elif op == "drop" and container is not holder:
            del container[key]
        elif op == "add":
            target = container[key]
            if isinstance(target, dict):
                target[draw(keys)] = draw(replacements)
            elif isinstance(target, list):
                target.insert(draw(st.integers(0, len(target))), draw(replacements))
        elif op == "wrap":
            container[key] = draw(st.sampled_from([[container[key]], {"k": container[key]}]))
        elif op == "nest":
            container[key] = nest(container[key], draw(st.integers(1, 60)))
        elif op == "stringify":
            container[key] = json.dumps(container[key])
        elif op == "repeat":
            container[key] = [copy.deepcopy(container[key]) for _ in range(draw(st.integers(2, 60)))]
    return holder["root"]


@st.composite
def bodies(draw: st.DrawFn, documents: st.SearchStrategy[Any], paths: list[str] | None = None) -> bytes:
    """A mutated example as bytes, now and then damaged at the byte level too."""
    body = encode(draw(mutations(documents, paths)))
    damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "flip", "append", "ascii"]))
    if damage == "truncate":
        body = body[: draw(st.integers(0, len(body)))]
    elif damage == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1 :]
    elif damage == "append":
        body += draw(st.binary(max_size=8))
    elif damage == "ascii":
        body = json.dumps(json.loads(body.decode("utf-8", "surrogatepass"))).encode()
    return body


# -- 1. the limits ------------------------------------------------------------------------


def _text_ok(text: str) -> bool:
    return "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _count(value: Any) -> int:
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return 1 + sum(_count(v) for v in children)


def _scalars_ok(value: Any) -> bool:
    if isinstance(value, dict):
        return all(len(k) <= MAX_KEY and _text_ok(k) and _scalars_ok(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_scalars_ok(v) for v in value)
    if isinstance(value, str):
        return len(value) <= MAX_STRING and _text_ok(value)
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return abs(value) <= MAX_INT
    return math.isfinite(value)


def within_limits(document: Any) -> bool:
    return _depth(document) <= MAX_DEPTH and _count(document) <= MAX_VALUES and _scalars_ok(document)


def assert_parses_or_refuses(body: bytes) -> Any:
    try:
        document = parse_json(body)
    except BodyError as exc:
        assert str(exc)
        return BodyError
    again = json.loads(json.dumps(document))
    assert again == document
    assert parse_json(json.dumps(document).encode()) == document
    return document


JSONISH = st.text(alphabet='{}[]",:0123456789.eE+- truefalsnu\\\x00', max_size=200).map(str.encode)


@hsettings(SETTINGS, max_examples=400)
@given(st.one_of(st.binary(max_size=400), JSONISH, bodies(st.sampled_from(ALL_EXAMPLES))))
@example(b"[" * 100_000)
@example(b'{"a":' * 50_000)
@example(b"1" * 5000)
@example(b"1e400")
@example(b"-1e400")
@example(b"NaN")
@example(b"[Infinity]")
@example(b'"\\ud800"')
@example(b'{"\\udfff": 1}')
@example(b'"\\u0000"')
@example(b'"\x00"')
@example(b'"\xed\xa0\x80"')  # a surrogate encoded as if it were UTF-8
@example(b"\xef\xbb\xbf{}")  # a UTF-8 byte order mark
@example(b"9223372036854775808")
@example(b"-9223372036854775808")
def test_the_limits_refuse_only_with_a_body_error(body: bytes) -> None:
    assert_parses_or_refuses(body)


@hsettings(SETTINGS, max_examples=300)
@given(st.one_of(json_values, deep, st.builds(nest, json_values, st.integers(25, 40))), st.booleans())
def test_the_limits_accept_exactly_the_documents_within_them(document: Any, ascii_only: bool) -> None:
    body = json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    parsed = assert_parses_or_refuses(body)
    if parsed is BodyError:
        assert not within_limits(document)
    else:
        assert within_limits(document)
        assert parsed == document


# -- 2. every format ----------------------------------------------------------------------

EVENTS = st.sampled_from(["secret_scanning_alert", "secret_scanning_alert", "ping", "push", ""])


def assert_reads_or_refuses(fmt: Format, body: bytes, headers: dict[str, str]) -> list[Alert]:
    try:
        reading = read(fmt, _source_name(fmt.name), body, headers)
    except BodyError as exc:
        assert str(exc)
        return []
    except PayloadError as exc:
        json.dumps(exc.errors)  # the app returns them as they are
        assert all(set(e) == {"loc", "msg", "type"} for e in exc.errors)
        return []
    assert reading.alerts or reading.ignored
    sent = {secret for text in strings_of(json.loads(body)) for secret in SECRET_SHAPES.findall(text)}
    for alert in reading.alerts:
        dumped = alert.model_dump_json()
        assert Alert.model_validate_json(dumped) == alert
        leaked = [secret for secret in sent if secret in dumped]
        assert not leaked, f"a secret the sender sent is in the alert: {leaked}"
    return reading.alerts


def _source_name(fmt: str) -> str:
    return {"github-secret-scanning": "github", "ocsf-detection-finding": "ocsf"}.get(fmt, fmt)


@pytest.mark.parametrize("name", sorted(FORMATS))
@hsettings(SETTINGS, max_examples=60)
@given(document=json_values, event=EVENTS)
def test_every_format_reads_any_json_or_refuses_it(name: str, document: Any, event: str) -> None:
    assert_reads_or_refuses(FORMATS[name], encode(document), {"x-github-event": event})


@pytest.mark.parametrize("name", sorted(FORMATS))
@hsettings(SETTINGS, max_examples=150)
@given(data=st.data(), event=EVENTS)
def test_every_format_reads_mutated_examples_or_refuses_them(name: str, data: st.DataObject, event: str) -> None:
    documents = examples_of(name if name in EXAMPLES else _source_name(name), weight=4)
    if name == "generic":
        documents = st.one_of(documents, generic_documents)
    document = data.draw(mutations(documents, field_paths(FORMATS[name])), label="document")
    assert_reads_or_refuses(FORMATS[name], encode(document), {"x-github-event": event})


# Inputs that once broke a property (found by the tests above), kept so that every run tries them.
KEY = "Ab3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5kL7n"
EDGE_CASES: list[tuple[str, Any]] = [
    ("generic", {"id": "x", "title": "t", "entities": [{"type": "llm_api_key", "provider": "openai", "key_id": ""}]}),
    ("generic", {"id": "x", "title": "t", "entities": [{"type": "llm_api_key", "provider": "o", "project_id": ""}]}),
    ("generic", {"id": "x", "title": "t", "entities": [{"type": "llm_api_key", "provider": "\u0130" * 64}]}),
    (
        "alertmanager",
        set_path(copy.deepcopy(EXAMPLES["alertmanager"][0]), "alerts.0.labels.llm_provider", "\u0130" * 64),
    ),
    (
        "github-secret-scanning",
        {"action": "created", "alert": {"number": 1}, "repository": {"full_name": f"aws_secret_access_key={KEY}"}},
    ),
]


@pytest.mark.parametrize(("name", "document"), EDGE_CASES)
def test_every_format_reads_the_known_edge_cases_or_refuses_them(name: str, document: Any) -> None:
    assert_reads_or_refuses(FORMATS[name], encode(document), {"x-github-event": "secret_scanning_alert"})


def test_every_format_has_an_example() -> None:
    for name in FORMATS:
        assert EXAMPLES.get(name) or EXAMPLES.get(_source_name(name)), f"format {name} has no example payload"


# -- 3. the app ---------------------------------------------------------------------------

AM_TOKEN = "alertmanager-token-0123456789"


class RecordingDispatcher(Dispatcher):
    """The real dispatcher, keeping every exception it raises (the app only logs them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.errors: list[tuple[str, BaseException]] = []

    def dispatch(self, alert: Alert) -> DispatchResult | None:
        try:
            return super().dispatch(alert)
        except BaseException as exc:
            self.errors.append((alert.id, exc))
            raise


class Edge:
    """The app under test, its store, launcher and dispatcher, and the answers it gave."""

    def __init__(self, client: TestClient, store: Store, recorder: Recorder, dispatcher: RecordingDispatcher) -> None:
        self.client, self.store, self.recorder, self.dispatcher = client, store, recorder, dispatcher
        self.sources: dict[str, Source] = client.app.state.sources  # type: ignore[attr-defined]
        self.statuses: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"Edge(statuses={self.statuses})"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    root = tmp_path_factory.mktemp("edge")
    settings = make_settings(
        root / "data", sources_dir=unthrottled_sources(root / "sources"), source_alertmanager_secret=AM_TOKEN
    )
    store = Store(settings.store_url)
    specs = [item.spec for item in load_specs(settings.specs_dir, catalog())]
    recorder = Recorder(store)
    dispatcher = RecordingDispatcher(store, specs, recorder, timedelta(hours=1))
    app = create_app(settings, store, dispatcher)
    with TestClient(app) as client:
        yield Edge(client, store, recorder, dispatcher)


# Text an answer may hold for reasons of its own: aisoar's vocabulary, and the examples'
# strings (an English phrase of an example payload may also be in an error message).
KNOWN_GRAMS = known_grams([*SCHEMA_NAMES, *VOCABULARY, *strings_of(ALL_EXAMPLES)])


def wait_dispatched(store: Store, alert_id: str, timeout: float = 15.0) -> tuple[str, str | None, str | None]:
    deadline = time.monotonic() + timeout
    while True:
        status = store.alert_status(alert_id)
        assert status is not None, f"accepted alert {alert_id} is not in the inbox"
        if status[0] == "dispatched" or time.monotonic() > deadline:
            return status
        time.sleep(0.005)


def deliver(edge: Edge, source: str, body: bytes) -> None:
    credentials = edge.sources[source].credentials
    assert credentials is not None
    response = edge.client.post(f"/webhooks/{source}", content=body, headers=sender_headers(credentials, body))
    edge.statuses[response.status_code] = edge.statuses.get(response.status_code, 0) + 1
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        answer = response.json()
        assert isinstance(answer.get("error"), str) and answer["error"]
        repeated = echoed(body, response.text, KNOWN_GRAMS)
        assert not repeated, f"the {response.status_code} answer echoes the body: {repeated[:3]}"
        return
    if response.status_code != 202:
        return
    for alert_id in response.json()["alert_ids"]:
        alert = edge.store.get_alert(alert_id)
        assert Alert.model_validate_json(alert.model_dump_json()) == alert
        status, incident_id, error = wait_dispatched(edge.store, alert_id)
        assert not edge.dispatcher.errors, edge.dispatcher.errors
        assert status == "dispatched", (alert_id, status, error)
        if alert.state == "resolved":
            assert incident_id is not None or (error or "").startswith("resolved:")
            continue
        assert incident_id is not None and error is None
        incident = edge.store.get_incident(incident_id)
        assert alert_id in incident.alert_ids
        assert any(launched == incident_id for launched, _ in edge.recorder.launched), "no playbook was started"


@hsettings(SETTINGS, max_examples=150)
@given(body=bodies(st.one_of(examples_of("generic"), generic_documents), field_paths(FORMATS["generic"])))
@example(body=encode(EDGE_CASES[0][1]))
@example(body=encode({"id": "x", "title": "t", "entities": [{"type": f"sk-proj-{KEY}"}]}))
def test_the_app_takes_or_refuses_mutated_generic_deliveries(edge: Edge, body: bytes) -> None:
    deliver(edge, "generic", body)


@hsettings(SETTINGS, max_examples=150)
@given(body=bodies(examples_of("alertmanager", weight=6), field_paths(FORMATS["alertmanager"])))
@example(body=encode(EDGE_CASES[3][1]))
def test_the_app_takes_or_refuses_mutated_alertmanager_deliveries(edge: Edge, body: bytes) -> None:
    deliver(edge, "alertmanager", body)


def test_the_app_still_answers_and_its_deliveries_are_whole(edge: Edge) -> None:
    """After the properties above: the app answers, and nothing accepted is left behind."""
    assert edge.client.get("/healthz").json() == {"status": "ok"}
    assert not edge.dispatcher.errors
    assert edge.store.pending_alerts() == []
