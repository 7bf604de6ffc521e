"""The generic HTTP action, for systems aisoar has no connector for yet.

``http.request`` is declared destructive: aisoar cannot know whether an arbitrary call
can be undone, so it always waits for an approval, and it must say how to verify its
effect (a read at the same endpoint). ``http.get`` is its read-only evidence collector.
The endpoint (and so the host) is chosen by name from configuration; a step supplies only
a relative path, parameters and a templated JSON body.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from aisoar.actions import Effect
from connectors.http import check_path, endpoint
from tasks.base import ActionContext, AssetInputs, ProbeResult, StepOutcome, ok
from tasks.registry import action

EndpointName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="a key of AISOAR_HTTP_ENDPOINTS")]
Path = Annotated[str, Field(max_length=1024, description="relative to the endpoint's configured URL")]
Statuses = Annotated[list[Annotated[int, Field(ge=100, le=599)]], Field(min_length=1, max_length=20)]


class _OnEndpoint(AssetInputs):
    endpoint: EndpointName
    path: Path = ""
    params: dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict, max_length=32
    )

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return check_path(value)

    @property
    def asset(self) -> str:
        return f"http:{self.endpoint}"


class HttpGet(_OnEndpoint):
    expect: Statuses = Field(default_factory=lambda: [200])


class Verify(BaseModel):
    """How to check the effect: a GET at the same endpoint, its status and, optionally, JSON values."""

    model_config = ConfigDict(extra="forbid")
    path: Path
    expect_status: Statuses = Field(default_factory=lambda: [200])
    expect_json: dict[Annotated[str, Field(pattern=r"^(/[^/]*)+$")], JsonValue] = Field(
        default_factory=dict, description="JSON pointer -> expected value"
    )

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return check_path(value)


class HttpRequest(_OnEndpoint):
    method: Literal["POST", "PUT", "PATCH", "DELETE"]
    body: JsonValue = None
    expect: Statuses = Field(default_factory=lambda: [200, 201, 202, 204])
    verify: Verify


def _pointer(document: Any, pointer: str) -> Any:
    """Resolve an RFC 6901 JSON pointer; raises KeyError when the value is absent."""
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(document, list) and token.isdigit() and int(token) < len(document):
            document = document[int(token)]
        elif isinstance(document, dict) and token in document:
            document = document[token]
        else:
            raise KeyError(pointer)
    return document


@action(
    "http.get",
    effect=Effect.read_only,
    inputs=HttpGet,
    summary="GET a configured HTTP endpoint and keep the answer as evidence",
    collects_evidence=True,
)
def http_get(ctx: ActionContext, inputs: HttpGet) -> StepOutcome:
    client = endpoint(ctx.settings, inputs.endpoint)
    answer = client.call("GET", inputs.path, "GET", params=inputs.params, expect=tuple(inputs.expect))
    document = {
        "collected_at": datetime.now(UTC).isoformat(),
        "endpoint": inputs.endpoint,
        "path": inputs.path,
        "params": inputs.params,
        "status": answer.status,
        "size": answer.size,
        "body": answer.body,
    }
    sha256 = ctx.keep(document, f"GET {inputs.endpoint}:/{inputs.path.lstrip('/')}", asset=inputs.asset)
    return ok(
        f"{inputs.endpoint} answered HTTP {answer.status} (kept as evidence)",
        status=answer.status,
        evidence_sha256=sha256,
    )


def _probe(ctx: ActionContext, inputs: HttpRequest, outcome: StepOutcome) -> ProbeResult:
    check = inputs.verify
    client = endpoint(ctx.settings, inputs.endpoint)
    answer = client.call("GET", check.path, "verify", expect=tuple(range(200, 600)))
    if answer.status not in check.expect_status:
        return ProbeResult(ok=False, detail=f"{inputs.endpoint} answered HTTP {answer.status} on verification")
    for pointer, expected in check.expect_json.items():
        try:
            actual = _pointer(answer.body, pointer)
        except KeyError:
            return ProbeResult(ok=False, detail=f"{pointer} is missing from the verification answer")
        if actual != expected:
            return ProbeResult(ok=False, detail=f"{pointer} is {actual!r}, expected {expected!r}")
    return ProbeResult(ok=True, detail=f"{inputs.endpoint} confirms the change (HTTP {answer.status})")


@action(
    "http.request",
    effect=Effect.destructive,
    inputs=HttpRequest,
    summary="Call a configured HTTP endpoint (no connector yet); always approval-gated, verified by a GET",
    probe=_probe,
)
def http_request(ctx: ActionContext, inputs: HttpRequest) -> StepOutcome:
    client = endpoint(ctx.settings, inputs.endpoint)
    answer = client.call(
        inputs.method,
        inputs.path,
        inputs.method,
        params=inputs.params,
        body=inputs.body,
        expect=tuple(inputs.expect),
        changes=True,
    )
    return ok(f"{inputs.endpoint} answered HTTP {answer.status} to {inputs.method}", status=answer.status)
